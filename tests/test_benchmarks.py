"""The benchmark scripts run end to end (with --dry-run: two steps a run) and keep their promises:
accuracy.py prints the final line the results file quotes; recipe_search.py never sees the test set."""
from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow   # a benchmark script end to end, in a subprocess: make test-all
def test_accuracy_benchmark_prints_its_final_line(tmp_path):
    out = tmp_path / "runs.jsonl"
    p = _script("accuracy.py", "--classes", "0,55,58", "--seeds", "2", "--poolings", "stride,max",
                "--template-poolings", "avg", "--device", "cpu", "--dry-run", "--json", str(out), "--out",
                str(tmp_path / "runs"))
    assert p.returncode == 0, p.stderr
    last = p.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"improved (stride|max): test_acc \d\.\d{4} ± \d\.\d{4} in \d+\.\d s vs "
                        r"template avg: \d\.\d{4} ± \d\.\d{4} in \d+\.\d s", last), last
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["model"], r["pooling"], r["seed"]) for r in rows) == [
        ("improved", "max", 0), ("improved", "max", 1), ("improved", "stride", 0), ("improved", "stride", 1),
        ("template", "avg", 0), ("template", "avg", 1)]
    assert all(r["classes"] == [0, 55, 58] for r in rows)
    # the final line's numbers are the per-run rows', recomputed here
    tactic = last.split()[1].rstrip(":")
    for (model, pooling), text in ((("improved", tactic), last.split(" vs ")[0]),
                                   (("template", "avg"), last.split(" vs ")[1])):
        accs = [r["test_acc"] for r in rows if (r["model"], r["pooling"]) == (model, pooling)]
        assert f"{statistics.mean(accs):.4f} ± {statistics.stdev(accs):.4f}" in text
    # the tactic is the library's choice on validation, made again here from the kept records
    from cifarlab.comparison import choose, group_records
    from cifarlab.records import find_records
    groups = group_records(find_records(tmp_path / "runs"), dry_runs=True)
    assert choose([g for g in groups if g.model == "improved"]).group.pooling == tactic


@pytest.mark.slow   # a benchmark script end to end, in a subprocess: make test-all
def test_transfer_benchmark_pairs_pretrained_with_scratch(full_data_dir, tmp_path):
    p = _script("transfer.py", "--dry-run", "--subsets", "0,55,58", "--seeds", "2", "--data-dir", str(full_data_dir),
               "--out", str(tmp_path / "transfer"))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    # the backbone as the run's record names it: the 97 other classes' train images, less its 2% held out
    assert re.search(r"^apple-otter-pickup_truck +scratch .* backbone \d+ s \(1 epochs on 47530 images", lines[-2])
    assert re.fullmatch(r"pretrained vs scratch: [+-]\d+\.\d points mean test acc \(\d of 1 subsets "
                        r"distinguishable\), pretraining \d+ s once", lines[-1]), lines[-1]


@pytest.mark.slow   # a benchmark script end to end, in a subprocess: make test-all
def test_speed_benchmark_names_the_machine_and_keeps_its_last_line():
    p = _script("speed.py", "--dry-run", "--device", "cpu")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert "CPU capability" in lines[0] and "native bf16" in lines[0]   # benchmarks/machine.py's device_summary
    assert any(line.strip().startswith("engine-bf16") for line in lines)
    assert re.search(r"improved preset \(max\).*fp32 [\d.]+ s/epoch, bf16 [\d.]+ s/epoch", p.stdout)
    assert re.fullmatch(r"engine speedup vs template loop: [\d.]+x \(template [\d.]+ s/epoch, engine [\d.]+ s/epoch, "
                        r"floor [\d.]+ s/epoch, overhead -?[\d.]+%\)", lines[-1]), lines[-1]


@pytest.mark.slow   # a benchmark script end to end, in a subprocess: make test-all
def test_precision_benchmark_pairs_the_two_precisions(tmp_path):
    p = _script("precision.py", "--subsets", "0,55,58", "--seeds", "2", "--device", "cpu", "--dry-run", "--out",
                str(tmp_path / "runs"))
    assert p.returncode == 0, p.stderr
    last = p.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"bf16 vs fp32, improved preset \(max\): [\d.]+x per epoch; test accuracy within noise on "
                        r"[01] of 1 subsets", last), last
    from cifarlab.records import find_records
    recs = find_records(tmp_path / "runs")
    assert sorted((r.config.precision, r.config.seed) for r in recs) == [("bf16", 0), ("bf16", 1), ("fp32", 0),
                                                                         ("fp32", 1)]
    assert {r.metrics["precision"] for r in recs} == {"fp32", "bf16"}  # what ran, recorded


def test_recipe_search_drops_the_test_set_and_uses_one_split_per_seed(monkeypatch, tmp_path):
    import recipe_search as rs
    monkeypatch.setattr(rs, "_OPTIONS", {**rs._OPTIONS, "data_dir": None})
    monkeypatch.setattr(rs, "_SUBSETS", {})
    a, b = rs._subset("0,55,58", 0), rs._subset("0,55,58", 1)
    assert len(a.y_test) == 0 and len(a.x_test) == 0
    assert len(a.y_train) == 1350 and len(a.y_val) == 150
    # split seed follows the seed: a different 10% is held out
    assert not bool((a.x_val == b.x_val).all())


@pytest.mark.slow   # a benchmark script end to end, in a subprocess: make test-all
def test_recipe_search_runs_and_tabulates(tmp_path):
    out = tmp_path / "search.jsonl"
    p = _script("recipe_search.py", "--subsets", "0,55,58", "--candidates", "w12,w16", "--seeds", "1",
                "--workers", "1", "--dry-run", "--json", str(out))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[-2].startswith("w12 ") and lines[-1].startswith("w16 ")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["candidate"] for r in rows} == {"w12", "w16"} and all(r["subset"] == "0,55,58" for r in rows)
    # the table's mean validation accuracy per candidate is the mean of its runs, recomputed here
    for line in lines[-2:]:
        name, per_subset, mean = line.split()[:3]
        assert float(mean) == pytest.approx(statistics.mean(r["val_acc"] for r in rows if r["candidate"] == name),
                                            abs=5e-5)
    bad = _script("recipe_search.py", "--candidates", "w12,nope")
    assert bad.returncode == 2 and "unknown candidate(s) nope" in bad.stderr

