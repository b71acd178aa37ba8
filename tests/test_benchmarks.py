"""The benchmark scripts run end to end (with --dry-run: two steps a run) and keep their promises:
accuracy.py prints the final line the results file quotes; recipe_search.py never sees the test set."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_accuracy_benchmark_prints_its_final_line(tmp_path):
    out = tmp_path / "runs.jsonl"
    p = _script("accuracy.py", "--classes", "0,55,58", "--seeds", "2", "--poolings", "stride,max",
                "--template-poolings", "avg", "--device", "cpu", "--dry-run", "--json", str(out))
    assert p.returncode == 0, p.stderr
    last = p.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"improved (stride|max): test_acc \d\.\d{4} ± \d\.\d{4} in \d+\.\d s vs "
                        r"template avg: \d\.\d{4} ± \d\.\d{4} in \d+\.\d s", last), last
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["model"], r["pooling"], r["seed"]) for r in rows) == [
        ("improved", "max", 0), ("improved", "max", 1), ("improved", "stride", 0), ("improved", "stride", 1),
        ("template", "avg", 0), ("template", "avg", 1)]
    assert all(r["classes"] == [0, 55, 58] and 0 <= r["test_acc"] <= 1 for r in rows)


def test_recipe_search_drops_the_test_set_and_uses_one_split_per_seed(monkeypatch, tmp_path):
    import recipe_search as rs
    monkeypatch.setattr(rs, "_OPTIONS", {**rs._OPTIONS, "data_dir": None})
    monkeypatch.setattr(rs, "_SUBSETS", {})
    a, b = rs._subset("0,55,58", 0), rs._subset("0,55,58", 1)
    assert len(a.y_test) == 0 and len(a.x_test) == 0
    assert len(a.y_train) == 1350 and len(a.y_val) == 150
    # split seed follows the seed: a different 10% is held out
    assert not bool((a.x_val == b.x_val).all())


def test_recipe_search_runs_and_tabulates(tmp_path):
    out = tmp_path / "search.jsonl"
    p = _script("recipe_search.py", "--subsets", "0,55,58", "--candidates", "w12,w16", "--seeds", "1",
                "--workers", "1", "--dry-run", "--json", str(out))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[-2].startswith("w12 ") and lines[-1].startswith("w16 ")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["candidate"] for r in rows} == {"w12", "w16"} and all(0 <= r["val_acc"] <= 1 for r in rows)
    bad = _script("recipe_search.py", "--candidates", "w12,nope")
    assert bad.returncode == 2 and "unknown candidate(s) nope" in bad.stderr

