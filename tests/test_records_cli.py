"""Run records on disk, resume, and the command line - including every way issue 17 found to lose work:
each numbered case below asserts that nothing is lost and the user gets one clear line."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cifarlab.config import RunConfig, make_config
from cifarlab.engine import TrainingDiverged
from cifarlab.experiment import run
from cifarlab.files import OutputError
from cifarlab.records import RECORD_FILES, find_records, load_record

ROOT = Path(__file__).resolve().parent.parent
METRIC_KEYS = {"classes", "model", "pooling", "seed", "epochs", "device", "train_seconds", "train_acc", "val_acc",
               "test_acc", "test_macro_f1", "best_epoch", "overfitting", "run_id", "config_id", "experiment_id",
               "experiment", "precision"}


@pytest.fixture(scope="module")
def record(sample_subset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return run(make_config("template", pooling="avg", epochs=8, device="cpu"), out=out, subset=sample_subset,
               live="quiet")


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_record_files_and_keys(record):
    assert sorted(p.name for p in record.path.iterdir()) == sorted(RECORD_FILES)
    m = record.metrics
    assert METRIC_KEYS <= set(m) and m["status"] == "ok" and m["precision"] == "fp32"
    assert m["classes"] == {"ids": [0, 55, 58], "names": ["apple", "otter", "pickup_truck"],
                            "superclasses": ["fruit_and_vegetables", "aquatic_mammals", "vehicles_1"]}
    assert m["run_id"] == record.config.run_id and record.path.name == record.config.run_name
    assert m["experiment"].startswith("classes 0:apple, 55:otter, 58:pickup_truck")
    assert m["configuration"] == "template/avg (epochs 8)"  # readable: what differs from its preset
    assert set(m["overfitting"]) >= {"acc_gap", "loss_gap", "val_loss_rise", "val_loss_min_epoch"}
    assert m["n_test"] == 300 and m["n_val"] == 150 and m["n_train"] == 1350
    assert len(record.history) == 8 and {"train_loss", "train_loss_p25", "val_acc"} <= set(record.history[0])
    assert RunConfig.from_dict(json.loads((record.path / "config.json").read_text())) == record.config
    assert (record.path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_recorded_numbers_are_what_the_saved_model_computes(record, sample_subset):
    """Independent of how the record was written: reload the weights, recompute on the test images."""
    model = record.load_model()
    with torch.inference_mode():
        logits = model(sample_subset.x_test).numpy()
    p = record.predictions("test")
    assert np.array_equal(p["true"], sample_subset.y_test.numpy())
    assert np.allclose(p["logits"], logits, atol=1e-5)
    acc = float((logits.argmax(1) == sample_subset.y_test.numpy()).mean())
    assert record.metrics["test_acc"] == pytest.approx(acc)
    # sklearn's report (computed from the predictions when the record was written) says the same accuracy
    report = (record.path / "report_test.txt").read_text()
    assert re.search(rf"accuracy\s+{acc:.4f}\s+300", report)
    # and the validation predictions are those of the validation split
    with torch.inference_mode():
        val = model(sample_subset.x_val).numpy().argmax(1)
    assert np.array_equal(record.predictions("val")["pred"], val)
    assert record.metrics["val_acc"] == pytest.approx(float((val == sample_subset.y_val.numpy()).mean()))


def test_resume_reuses_an_identical_run_and_force_retrains(record, sample_subset, capsys):
    before = (record.path / "metrics.json").stat().st_mtime_ns
    again = run(record.config, out=record.path.parent, subset=sample_subset, live="none")
    assert again.reused and again.path == record.path
    assert (record.path / "metrics.json").stat().st_mtime_ns == before
    assert "skipped: template net, avg pooling, seed 0 (record exists" in capsys.readouterr().out
    # a runtime-only difference (where, how shown) is the same run
    assert run(record.config.replace(plot_every=2), out=record.path.parent, subset=sample_subset, live="none").reused
    # anything that can change the numbers is another run, in its own folder
    other = run(record.config.replace(epochs=2), out=record.path.parent, subset=sample_subset, live="none")
    assert not other.reused and other.path != record.path and record.path.is_dir()
    forced = run(record.config, out=record.path.parent, subset=sample_subset, live="none", force=True)
    assert not forced.reused and (record.path / "metrics.json").stat().st_mtime_ns != before
    # same numbers, retrained (deterministic on the CPU)
    assert forced.metrics["test_acc"] == record.metrics["test_acc"]


def test_failed_write_keeps_the_good_record(record, sample_subset, monkeypatch):
    before = _snapshot(record.path)

    def broken_save(*a, **k):
        raise OSError("disk full (simulated)")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="simulated"):
        run(record.config, out=record.path.parent, subset=sample_subset, live="none", force=True)
    assert _snapshot(record.path) == before
    assert not [p for p in record.path.parent.iterdir() if p.name.startswith(".")]  # no staging folders left


# --- issue 17, case by case -------------------------------------------------------------------------------
def _cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "cifarlab", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=env)


def _one_line_error(r, rc=2):
    assert r.returncode == rc, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


@pytest.fixture(scope="module")
def runs_folder(record):
    return record.path.parent


@pytest.mark.slow   # five compare commands, each a fresh process: make test-all
def test_17_1_best_never_destroys_what_it_did_not_write(runs_folder, tmp_path):
    before = _snapshot(runs_folder)
    err = _one_line_error(_cli("compare", "--runs", str(runs_folder), "--best", str(runs_folder)))
    assert "did not write" in err and "Pass a new folder" in err
    assert _snapshot(runs_folder) == before
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("my work")
    err = _one_line_error(_cli("compare", "--runs", str(runs_folder), "--best", str(thesis)))
    assert "chapter1.tex" in err and (thesis / "chapter1.tex").read_text() == "my work"
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    err = _one_line_error(_cli("compare", "--runs", str(runs_folder), "--best", str(notes)))
    assert "is a file" in err and notes.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifarlab-data", "notes.txt", "thesis"]  # no .old-*
    # a previous best folder with a file the user added is not replaced either
    best = tmp_path / "best"
    r = _cli("compare", "--runs", str(runs_folder), "--best", str(best))
    assert r.returncode == 0, r.stderr
    (best / "my_notes.md").write_text("mine")
    err = _one_line_error(_cli("compare", "--runs", str(runs_folder), "--best", str(best)))
    assert "my_notes.md" in err and (best / "my_notes.md").read_text() == "mine"


def test_17_2_a_diverged_run_never_replaces_a_complete_record(record, sample_subset, monkeypatch):
    before = _snapshot(record.path)
    import cifarlab.experiment as experiment

    def diverging_train(cfg, subset, view=None, init=None):  # the same run, retrained, this time diverging
        from cifarlab.engine import train as real_train
        result = real_train(cfg.replace(epochs=1), subset)
        result.config = cfg
        result.diverged = "the training loss became nan at epoch 1, step 3 (simulated)"
        raise TrainingDiverged(result.diverged, result)
    monkeypatch.setattr(experiment, "train", diverging_train)
    with pytest.raises(TrainingDiverged, match="_diverged") as e:
        run(record.config, out=record.path.parent, subset=sample_subset, live="none", force=True)
    assert _snapshot(record.path) == before
    beside = record.path.with_name(record.path.name + "_diverged")
    assert str(beside) in str(e.value) and load_record(beside).diverged
    assert [r.path for r in find_records(record.path.parent) if r.ok and r.config == record.config] == [record.path]


def test_17_2_cli_diverging_lr_is_its_own_record(runs_folder, record, cli):
    before = _snapshot(record.path)
    r = cli("train", "--preset", "template", "--pooling", "avg", "--epochs", "8", "--lr", "1e9", "--out",
             str(runs_folder), "--live", "none")
    err = _one_line_error(r, rc=1)
    assert "learning rate" in err and "Its record:" in err
    assert _snapshot(record.path) == before


@pytest.mark.slow   # loads all 100 classes of the full dataset: make test-all
def test_17_3_every_class_gives_a_short_folder_name(tmp_path, full_data_dir):
    r = _cli("train", "--dry-run", "--classes", ",".join(map(str, range(100))), "--out", str(tmp_path / "o"),
             "--data-dir", str(full_data_dir), "--live", "none")
    assert r.returncode == 0, r.stderr
    (folder,) = (tmp_path / "o").iterdir()
    assert folder.name.startswith("dryrun_template_avg_seed0_100classes_") and len(folder.name) < 60
    assert load_record(folder).metrics["classes"]["ids"] == list(range(100))


@pytest.mark.parametrize("case", ["out is a file", "out under a file", "data dir is a file"])
def test_17_4_bad_locations_fail_before_training(case, tmp_path, cli):
    f = tmp_path / "a_file"
    f.write_text("precious")
    args = {"out is a file": ["--out", str(f)], "out under a file": ["--out", str(f / "runs")],
            "data dir is a file": ["--out", str(tmp_path / "o"), "--data-dir", str(f)]}[case]
    r = cli("train", "--epochs", "500", *args)
    err = _one_line_error(r)
    assert str(f) in err and ("--out" in err or "--data-dir" in err)
    assert "Loaded" not in r.stdout and "training" not in r.stdout  # nothing loaded, nothing trained
    assert f.read_text() == "precious" and not (tmp_path / "o").exists()


def test_17_4_unwritable_out_is_named_before_training(tmp_path, monkeypatch):
    # (as root every folder is writable, so the permission answer is simulated; the check is real)
    import cifarlab.files as files
    ro = tmp_path / "readonly"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(files.os, "access", lambda p, mode: False if Path(p) == ro else real(p, mode))
    with pytest.raises(OutputError, match="not writable"):
        run(make_config("template", epochs=500), out=ro / "runs")


@pytest.mark.slow   # a CLI run and three compares, each a fresh process: make test-all
def test_17_5_no_validation_split_trains_summarizes_and_compares(tmp_path):
    r = _cli("train", "--preset", "template", "--classes", "0,55,58", "--val-fraction", "0", "--epochs", "3",
             "--out", str(tmp_path / "runs"), "--live", "none")
    assert r.returncode == 0, r.stderr
    assert "no validation split" in r.stdout and "Traceback" not in r.stderr
    r = _cli("compare", "--runs", str(tmp_path / "runs"))
    assert r.returncode == 0 and "no validation split" in r.stdout and "template/avg" in r.stdout
    err = _one_line_error(_cli("compare", "--runs", str(tmp_path / "runs"), "--best", str(tmp_path / "best")))
    assert "nothing saved" in err and not (tmp_path / "best").exists()


def test_17_6_strings_from_papermill_yaml_json(tmp_path):
    from cifarlab.config import notebook_config
    assert make_config(dry_run="False").dry_run is False
    cfg = notebook_config("improved", "[0, 55, 58]", "max", "1", "10", {"lr": "1e-3"})
    assert (cfg.epochs, cfg.seed, cfg.lr, cfg.classes) == (10, 1, 1e-3, (0, 55, 58))


def test_17_8_every_hint_names_a_command_and_option_that_exist():
    """Scan the library, notebooks, scripts and the docs (README.md, CONTRIBUTING.md, docs/*.md) for
    `python -m cifarlab ...` hints. (make targets, scripts' options and links: tests/test_docs.py.)"""
    from cifarlab.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    docs = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")]
    texts = [p.read_text() for p in list((ROOT / "cifarlab").glob("*.py")) + list((ROOT / "notebooks").glob("*.ipynb"))
             + docs + [ROOT / "scripts" / "run_all.py"]]
    hints = [m for t in texts for m in re.findall(r"python -m cifarlab ([a-z]+)([^`\"\n)]*)", t)]
    assert len(hints) > 10
    for command, rest in hints:
        assert command in sub.choices, f"hint names a command that does not exist: cifarlab {command}"
        options = {o for a in sub.choices[command]._actions for o in a.option_strings}
        for opt in re.findall(r"(--[a-z][a-z-]*)", rest):
            assert opt in options, f"hint `cifarlab {command} ...{opt}` names an option that does not exist"


@pytest.mark.parametrize("args, words", [
    (["train", "--classes", "aple,otter"], "did you mean 'apple'"),
    (["train", "--pooling", "mean"], "pooling must be one of"),
    (["train", "--epochs", "x"], "epochs='x' is not allowed: expected a whole number"),
    (["train", "--preset", "fast"], "invalid choice"),
    (["train", "--classes", "apple"], "at least 2"),
    (["train", "--tta-flip", "maybe"], "expected true or false"),
    (["train", "--augment", "crop+flip", "--crop-padding", "32"], "crop_padding=32"),
    (["compare", "--runs", "/nonexistent/runs"], "does not exist"),
    pytest.param(["train", "--device", "cuda"], "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_cli_bad_arguments_one_line_no_traceback(args, words, tmp_path):
    out = tmp_path / "out"
    r = _cli(*args, "--out", str(out)) if args[0] == "train" else _cli(*args)
    assert words in _one_line_error(r)
    assert not out.exists()  # nothing written


def test_cli_train_end_to_end(tmp_path):
    r = _cli("train", "--classes", "apple,otter,pickup_truck", "--pooling", "max", "--epochs", "3",
             "--hidden-size", "16", "--out", str(tmp_path / "runs"))
    assert r.returncode == 0, r.stderr
    (path,) = (tmp_path / "runs").iterdir()
    rec = load_record(path)
    assert rec.config.epochs == 3 and rec.config.hidden_size == 16 and rec.metrics["status"] == "ok"
    assert str(rec.path) in r.stdout and "test acc" in r.stdout
    r = _cli("train", "--classes", "0,55,58", "--pooling", "max", "--epochs", "3", "--hidden-size", "16", "--out",
             str(tmp_path / "runs"))
    assert r.returncode == 0 and "skipped:" in r.stdout and "record exists" in r.stdout


def test_cli_dry_run_never_mixes_with_real_runs(tmp_path, cli):
    r = cli("train", "--preset", "improved", "--dry-run", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    rec = next(r for r in find_records(tmp_path))
    assert rec.config.dry_run and rec.metrics["steps"] == 2 and rec.config.model == "improved"
    assert rec.path.name.startswith("dryrun_") and rec.path.name != make_config("improved").run_name
