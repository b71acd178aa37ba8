"""The config: every field checked when the config is made (types coerced where unambiguous, ranges,
rules between fields), from Python and from the command line alike; and a run's identity."""
import dataclasses
import json
import math
import subprocess
import sys

import pytest

from cifarlab.config import RUNTIME_FIELDS, ConfigError, RunConfig, make_config, notebook_config

# field, value as it may arrive (papermill -r, YAML, JSON), what the config holds
COERCED = [
    ("epochs", "10", 10), ("epochs", 10.0, 10), ("batch_size", " 64 ", 64), ("seed", "3", 3),
    ("lr", "1e-3", 1e-3), ("lr", 1, 1.0), ("val_fraction", "0.2", 0.2), ("dropout", "0", 0.0),
    ("dry_run", "False", False), ("dry_run", "true", True), ("dry_run", 0, False), ("tta_flip", "yes", True),
    ("nesterov", "off", False), ("pooling", "MAX", "max"), ("augment", " crop+flip", "crop+flip"),
    ("classes", "[0, 55, 58]", (0, 55, 58)), ("classes", "apple otter", (0, 55)), ("plot_every", "5", 5),
    ("precision", "BF16", "bf16"), ("crop_padding", "31", 31),
]

# field, a value that must be refused, words the error must hold (besides the field's name)
REFUSED = [
    ("epochs", "ten", "whole number"), ("epochs", 0, ">= 1"), ("epochs", 2.5, "whole number"),
    ("batch_size", 64.5, "whole number"), ("batch_size", 0, ">= 1"), ("batch_size", True, "whole number"),
    ("hidden_size", 0, "from 1"), ("hidden_size", "wide", "whole number"),
    ("lr", 0, "> 0"), ("lr", "fast", "a number"), ("lr", float("inf"), "finite"), ("lr", float("nan"), "finite"),
    ("momentum", 1.0, "[0, 1)"), ("momentum", -0.1, "[0, 1)"),
    ("weight_decay", -1e-4, ">= 0"), ("dropout", 1.0, "[0, 1)"), ("label_smoothing", 1.5, "[0, 1)"),
    ("warmup_fraction", 1.0, "[0, 1)"), ("crop_padding", 32, "smaller than the 32-pixel image"),
    ("crop_padding", -1, "from 0 to 31"), ("val_fraction", 1.0, "at least one validation and one training"),
    ("val_fraction", 0.001, "at least one validation"), ("val_fraction", -0.1, "0 (no validation split)"),
    ("split_seed", -1, ">= 0"), ("seed", -5, ">= 0"), ("seed", "x", "whole number"),
    ("dry_run", "maybe", "true or false"), ("dry_run", 2, "true or false"), ("tta_flip", "sometimes", "true or false"),
    ("model", "resnet", "template, improved"), ("pooling", "mean", "stride, max, avg"),
    ("optimizer", "adam", "sgd, adamw"), ("schedule", "step", "constant, onecycle, cosine"),
    ("augment", "rotate", "none, flip, crop+flip"), ("select", "first", "last, best"),
    ("precision", "fp16", "auto, fp32, bf16"), ("device", "gpu", "auto, cpu, cuda"), ("plot_every", 0, ">= 1"),
    ("classes", "apple", "at least 2"), ("classes", "aple,otter", "did you mean 'apple'"),
    ("model", 3, "a string"),
]


@pytest.mark.parametrize("field, value, want", COERCED, ids=lambda v: repr(v))
def test_strings_and_numbers_are_coerced_when_unambiguous(field, value, want):
    cfg = make_config(**{field: value})
    assert getattr(cfg, field) == want and type(getattr(cfg, field)) is type(want)


@pytest.mark.parametrize("field, value, words", REFUSED, ids=lambda v: repr(v))
def test_bad_values_are_refused_naming_the_field(field, value, words):
    with pytest.raises(ConfigError) as e:
        make_config(**{field: value})
    assert field in str(e.value) and words in str(e.value)


# The same table through the command line: one line, rc 2, before any data is loaded or anything trained.
# (a flag without a value, and values only Python can pass - None, True, inf, nan, a number for a name - are left out)
CLI_REFUSED = [(f, v, w) for f, v, w in REFUSED
               if f != "dry_run" and w != "a string" and v is not None and not isinstance(v, bool)
               and (isinstance(v, str) or math.isfinite(v))]


def test_cli_refuses_every_bad_value_in_one_line_before_training(tmp_path):
    # One interpreter for the whole table (each CLI start costs seconds): main() is the entry point.
    code = ("import sys, json; from cifarlab.cli import main\n"
            "cases = json.loads(sys.argv[1]); out = sys.argv[2]\n"
            "for f, v, w in cases:\n"
            "    rc = main(['train', '--' + f.replace('_', '-'), str(v), '--out', out])\n"
            "    print('RC', rc, flush=True)\n")
    cases = [[f, v, w] for f, v, w in CLI_REFUSED]
    r = subprocess.run([sys.executable, "-c", code, json.dumps(cases), str(tmp_path / "out")], capture_output=True,
                       text=True, timeout=300)
    rcs = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("RC")]
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert rcs == [2] * len(cases), r.stderr[-2000:]
    assert len(errors) == len(cases) and "Traceback" not in r.stderr
    for (f, v, w), line in zip(cases, errors):
        assert f in line and w in line, (f, v, line)
    assert not (tmp_path / "out").exists()  # nothing written, nothing trained


def test_rules_between_fields():
    with pytest.raises(ConfigError, match="select='best' needs a validation split"):
        make_config(select="best", val_fraction=0)
    with pytest.raises(ConfigError, match="nesterov=True needs momentum > 0"):
        make_config("improved", momentum=0)
    with pytest.raises(ConfigError, match="BatchNorm needs at least 2"):
        make_config("improved", batch_size=1)
    assert make_config("template", batch_size=1).batch_size == 1  # no BatchNorm: fine
    assert make_config("improved", optimizer="adamw", momentum=0).optimizer == "adamw"  # nesterov unused there


def test_from_dict_checks_hand_written_json():
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) 'epoch' \(did you mean 'epochs'\?\)"):
        RunConfig.from_dict({"epoch": 3})
    assert RunConfig.from_dict({"epochs": "3", "dry_run": "false"}).epochs == 3
    with pytest.raises(ConfigError, match="mapping"):
        RunConfig.from_dict([1, 2])
    with pytest.raises(ConfigError, match="classes: cannot read classes from None"):
        RunConfig.from_dict({"classes": None})


def test_identity_leaves_out_where_and_how_a_run_is_shown():
    a = make_config("improved")
    # every field but the runtime ones; a field added later only once it leaves its default (older records)
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert set(a.identity()) == fields - set(RUNTIME_FIELDS) - {"pretrain_epochs"}
    assert "pretrain_epochs" in a.replace(pretrain_epochs=2).identity()
    for field, value in (("device", "cpu"), ("plot_every", 3)):
        b = a.replace(**{field: value})
        assert b.run_id == a.run_id and b.run_name == a.run_name
    # every field that can change the numbers changes the identity, and the folder
    for field, value in (("epochs", 3), ("lr", 0.05), ("hidden_size", 8), ("classes", (0, 55)), ("seed", 1),
                         ("dry_run", True), ("val_fraction", 0.2), ("split_seed", 1), ("precision", "bf16")):
        b = a.replace(**{field: value})
        assert b.run_id != a.run_id and b.run_name != a.run_name, field
    # a configuration is the identity minus the seed; an experiment is the data
    assert a.replace(seed=1).config_id == a.config_id and a.replace(epochs=3).config_id != a.config_id
    assert a.replace(epochs=3, model="template").experiment_id == a.experiment_id
    assert a.replace(classes=(0, 55)).experiment_id != a.experiment_id
    assert a.replace(val_fraction=0.2).experiment_id != a.experiment_id


def test_record_names_stay_short_and_readable():
    assert make_config("improved", pooling="max").run_name.startswith("improved_max_seed0_c0-55-58_")
    every = make_config(classes=list(range(100)), dry_run=True)
    assert len(every.run_name) < 60 and every.run_name.startswith("dryrun_template_avg_seed0_100classes_")
    assert make_config(classes="vehicles_1").experiment_name == "vehicles_1"
    assert make_config(classes=[0, 55, 58]).experiment_name == "apple-otter-pickup_truck"
    with_split = make_config(classes=[0, 55, 58], val_fraction=0.2)
    assert with_split.experiment_name == "apple-otter-pickup_truck_val0.2_split0"
    assert len(make_config(classes=list(range(40))).experiment_name) < 40


def test_notebook_parameters_make_the_config():
    cfg = notebook_config("improved", [0, 55, 58], "max", 1, None, {"lr": "0.05"})
    assert cfg.lr == 0.05 and cfg.epochs == 30 and cfg.seed == 1 and cfg.pooling == "max"
    with pytest.raises(ConfigError, match="unknown config field"):
        notebook_config("improved", [0, 55, 58], "max", 0, None, {"learning_rate": 0.1})
