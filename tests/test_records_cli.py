import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from cifarlab.config import RunConfig, make_config
from cifarlab.experiment import run
from cifarlab.records import RECORD_FILES, find_records, load_record

METRIC_KEYS = {"classes", "model", "pooling", "seed", "epochs", "device", "train_seconds", "train_acc", "val_acc",
               "test_acc", "test_macro_f1", "best_epoch", "overfitting"}


@pytest.fixture(scope="module")
def record(sample_subset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return run(make_config("template", pooling="avg", epochs=8, device="cpu"), out=out, subset=sample_subset,
               live="quiet")


def test_record_files_and_keys(record):
    assert sorted(p.name for p in record.path.iterdir()) == sorted(RECORD_FILES)
    m = record.metrics
    assert METRIC_KEYS <= set(m) and m["status"] == "ok"
    assert m["classes"] == {"ids": [0, 55, 58], "names": ["apple", "otter", "pickup_truck"],
                            "superclasses": ["fruit_and_vegetables", "aquatic_mammals", "vehicles_1"]}
    assert set(m["overfitting"]) >= {"acc_gap", "loss_gap", "val_loss_rise", "val_loss_min_epoch"}
    assert m["overfitting"]["acc_gap"] == pytest.approx(m["train_acc"] - m["val_acc"])
    assert m["n_test"] == 300 and m["n_val"] == 150 and m["n_train"] == 1350
    assert len(record.history) == 8 and {"train_loss", "train_loss_p25", "val_acc"} <= set(record.history[0])
    assert RunConfig.from_dict(json.loads((record.path / "config.json").read_text())) == record.config
    assert "apple" in (record.path / "report_test.txt").read_text()
    assert (record.path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_record_predictions_reproduce_the_metrics(record, sample_subset):
    p = record.predictions()
    assert np.array_equal(p["true"], sample_subset.y_test.numpy())
    assert (p["pred"] == p["true"]).mean() == pytest.approx(record.metrics["test_acc"])
    model = record.load_model()
    with torch.inference_mode():
        assert np.array_equal(model(sample_subset.x_test).argmax(1).numpy(), p["pred"])


def test_failed_write_keeps_the_good_record(record, sample_subset, monkeypatch):
    before = {p.name: p.read_bytes() for p in record.path.iterdir()}

    def broken_save(*a, **k):
        raise OSError("disk full (simulated)")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="simulated"):
        run(record.config, out=record.path.parent, subset=sample_subset, live="none")
    after = {p.name: p.read_bytes() for p in record.path.iterdir()}
    assert after == before
    assert [p.name for p in record.path.parent.iterdir()] == [record.path.name]  # no temp folders left
    assert len(find_records(record.path.parent)) == 1


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cifarlab", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_cli_train_end_to_end(tmp_path):
    r = _cli("train", "--classes", "apple,otter,pickup_truck", "--pooling", "max", "--epochs", "3",
             "--hidden-size", "16", "--out", str(tmp_path / "runs"))
    assert r.returncode == 0, r.stderr
    rec = load_record(tmp_path / "runs" / "template_max_seed0_c0-55-58")
    assert rec.config.epochs == 3 and rec.config.hidden_size == 16 and rec.metrics["status"] == "ok"
    assert str(rec.path) in r.stdout and "test acc" in r.stdout


def test_cli_dry_run_and_preset(tmp_path):
    r = _cli("train", "--preset", "improved", "--dry-run", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    rec = find_records(tmp_path)[0]
    assert rec.config.dry_run and rec.metrics["steps"] == 2 and rec.config.model == "improved"
    assert rec.path.name.endswith("_dryrun")  # never replaces a real run's record


@pytest.mark.parametrize("args, words", [
    (["train", "--classes", "aple,otter"], "did you mean 'apple'"),
    (["train", "--pooling", "mean"], "pooling must be one of"),
    (["train", "--epochs", "x"], "invalid int value"),
    (["train", "--preset", "fast"], "invalid choice"),
    (["train", "--classes", "apple"], "at least 2"),
    (["train", "--tta-flip", "maybe"], "expected true or false"),
    (["compare", "--runs", "/nonexistent/runs"], "no completed run records"),
])
def test_cli_bad_arguments_one_line_no_traceback(args, words, tmp_path):
    out = tmp_path / "out"
    r = _cli(*args, "--out", str(out)) if args[0] == "train" else _cli(*args)
    assert r.returncode == 2
    assert words in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()  # nothing written
