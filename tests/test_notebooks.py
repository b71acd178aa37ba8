"""The notebook suite: committed clean, and executed end to end by papermill on the shipped sample."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cifarlab.export import onnx_predict, load_best
from cifarlab.records import find_records

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_suite_is_there():
    assert [p.name for p in NOTEBOOKS] == ["00_pick_classes.ipynb", "01_train.ipynb", "02_compare.ipynb",
                                           "03_reload.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_are_clean(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name} carries outputs"
    assert "widgets" not in nb["metadata"], f"{path.name} carries metadata.widgets"
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one papermill parameters cell"
    text = json.dumps(nb)
    assert "colab.research.google.com" in text and "REPO_URL" in text  # Colab badge and install cell


def test_whole_suite_under_papermill(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts" / "run_all.py"), "--out", str(out), "--seeds", "1", "--epochs", "2",
           "--kernel", "python3"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    records = find_records(out / "runs")
    assert sorted((rec.config.model, rec.config.pooling) for rec in records) == sorted(
        (m, p) for m in ("improved", "template") for p in ("stride", "max", "avg"))
    # the comparison chose a model and saved it with an ONNX export that matches PyTorch
    sel = json.loads((out / "best" / "selection.json").read_text())
    assert "Choose the configuration" in sel["rule"] and sel["onnx_check"]["opset"] >= 18
    model, cfg, classes = load_best(out / "best")
    chosen = [rec for rec in records if str(rec.path) == sel["run"]][0]
    from cifarlab.data import load_subset
    sub = load_subset(cfg.classes, verbose=False)
    import torch
    with torch.inference_mode():
        want = model(sub.x_test[:7]).numpy()
    assert np.allclose(onnx_predict(out / "best" / "model.onnx", sub.x_test.numpy()[:7]), want, atol=1e-4)
    # the reload notebook, in its own kernel, reproduced the recorded predictions
    reload_nb = json.loads((out / "notebooks" / "03_reload.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in reload_nb["cells"] for o in c.get("outputs", []))
    n = chosen.metrics["n_test"]
    assert f"PyTorch : {n}/{n} predictions as recorded" in text and f"ONNX    : {n}/{n} predictions as recorded" in text
    # the picker notebook ran without a front end and printed the selection
    pick = json.loads((out / "notebooks" / "00_pick_classes.ipynb").read_text())
    printed = "".join("".join(o.get("text", "")) for c in pick["cells"] for o in c.get("outputs", []))
    assert 'make run-all CLASSES="apple otter pickup_truck"' in printed
    # executed training notebooks stay short: no flood of progress output
    train_nb = (out / "notebooks" / "01_train_improved_max_seed0.ipynb").read_text()
    assert len(train_nb) < 2_000_000


def test_a_failing_cell_stops_the_suite_and_keeps_the_notebook(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts" / "run_all.py"), "--out", str(out), "--seeds", "1", "--epochs", "1",
           "--models", "template", "--poolings", "avg", "--kernel", "python3", "--data-dir", str(tmp_path / "nodata")]
    # classes outside the sample with no data and no network: the training notebook must fail clearly
    r = subprocess.run(cmd + ["--classes", "1 2"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**__import__("os").environ, "CIFARLAB_URL": "http://127.0.0.1:9/none.tar.gz"})
    assert r.returncode == 1
    assert "DataError" in r.stderr
    kept = out / "notebooks" / "01_train_template_avg_seed0.ipynb"
    assert kept.is_file() and "could not download" in kept.read_text()
    assert not (out / "best").exists()
