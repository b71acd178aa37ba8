"""Colab, as near as this machine gets: an environment with Colab's versions of what cifarlab touches
(tests/colab_versions.txt), cifarlab installed into it by the notebooks' own setup cell, and a check that
pip changed none of those packages; then 01_train runs one tiny training run there, and the widget checks
(tests/widget_checks.py) run under Colab's whole widget stack.

How the environment is built (honest, and fast enough for CI):
* a fresh venv of this Python, with Colab's pip;
* torch and torchvision are this environment's own (2.14.1 / 0.29.1; Colab has 2.11 / 0.26, and the
  registry's other builds are multi-GB), brought in with the packages only they need (CUDA libraries,
  triton, setuptools) as hard links to the installed files: no copy of 5 GB, and pip sees them installed
  as usual (an uninstall would only remove the links). Symbolic links to the files where hard links fail;
* everything else at Colab's pinned versions, installed by pip from a wheel folder built once
  (``.test-cache/colab-wheels/``, ignored by git; ``$CIFARLAB_TEST_CACHE`` moves it);
* cifarlab is NOT installed: 01_train's setup cell finds it missing and runs its ``%pip install`` from a
  ``git+file://`` copy of this checkout - the cell's own line, with a local repository for GitHub.
That install uses the package index as Colab's would (the newest onnx, papermill ... that the ranges allow).
Without the network the test skips, unless CIFARLAB_REQUIRE_COLAB_ENV=1 (CI) makes that a failure.
"""
import hashlib
import importlib.metadata as md
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cifarlab.records import find_records

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CIFARLAB_TEST_CACHE", ROOT / ".test-cache"))
VERSIONS = ROOT / "tests" / "colab_versions.txt"
_spec = importlib.util.spec_from_file_location("nbtool", ROOT / "scripts" / "nbtool.py")
nbtool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbtool)

pytestmark = pytest.mark.slow


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_pins() -> dict[str, str]:
    pins = {}
    for line in VERSIONS.read_text().splitlines():
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line.split("#")[0].strip())
        if m:
            pins[_canon(m[1])] = m[2]
    return pins


def _unavailable(why: str):
    if os.environ.get("CIFARLAB_REQUIRE_COLAB_ENV"):
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "CI")}  # no worktree


def _pip(python, *args, timeout=900):
    return subprocess.run([str(python), "-m", "pip", *args, "--disable-pip-version-check"], capture_output=True,
                          text=True, timeout=timeout, env=CLEAN_ENV)


def _wheels() -> Path:
    """Colab's pinned packages as wheels, built once per version of colab_versions.txt."""
    key = f"py{sys.version_info[0]}{sys.version_info[1]}-{hashlib.sha256(VERSIONS.read_bytes()).hexdigest()[:12]}"
    target = CACHE / "colab-wheels" / key
    if not (target / ".complete").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="wheels-", dir=target.parent))
        r = _pip(sys.executable, "wheel", "-q", "-w", str(tmp), "-r", str(VERSIONS))
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            _unavailable(f"pip could not fetch Colab's versions: {(r.stdout + r.stderr).strip()[-800:]}")
        (tmp / ".complete").touch()
        try:
            tmp.rename(target)                      # complete or absent, never half there
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another run put it there first
    return target


def _torch_and_what_only_it_needs(colab: dict) -> list[md.Distribution]:
    """torch, torchvision and their requirements (extras and markers followed), less Colab's own packages."""
    from packaging.requirements import Requirement

    found, todo = {}, [("torch", ()), ("torchvision", ())]
    while todo:
        name, extras = todo.pop()
        if _canon(name) in colab:
            continue
        dist = md.distribution(name)
        key = _canon(dist.metadata["Name"])
        if key in found and set(extras) <= found[key][1]:
            continue
        found.setdefault(key, (dist, set()))[1].update(extras)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or ("",))):
                todo.append((req.name, tuple(req.extras)))
    return [dist for dist, _ in found.values()]


def _link_into(env_site: Path, dist: md.Distribution) -> int:
    n = 0
    for f in dist.files or []:
        src = Path(dist.locate_file(f))
        dst = Path(os.path.normpath(env_site / f))
        if not src.is_file() or dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            os.symlink(src, dst)
        n += 1
    return n


def _installed(python) -> dict[str, str]:
    r = _pip(python, "list", "--format=json")
    assert r.returncode == 0, r.stderr[-2000:]
    return {_canon(d["name"]): d["version"] for d in json.loads(r.stdout)}


def _git_repo_of_this_checkout(where: Path) -> str:
    """What GitHub would serve: the package's files in a git repository (uncommitted edits included)."""
    where.mkdir()
    for part in ("pyproject.toml", "README.md", "cifarlab"):
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, where / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, where / part)
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=where,
                                    capture_output=True, text=True, check=True)
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "cifarlab")
    return f"file://{where}"


def test_colab_env_setup_cell_changes_none_of_colabs_packages_then_01_trains(tmp_path):
    if not shutil.which("git"):
        _unavailable("needs git (the setup cell installs from a git repository)")
    try:
        md.distribution("torch")
        md.distribution("torchvision")
    except md.PackageNotFoundError:
        _unavailable("needs torch and torchvision installed in this environment")
    colab = colab_pins()
    t0 = time.monotonic()
    wheels = _wheels()
    t_wheels = time.monotonic() - t0

    # 1. Colab's environment: Colab's pip, this torch linked in, Colab's versions of the rest
    env = tmp_path / "colab"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=300)
    py = env / "bin" / "python"
    r = _pip(py, "install", "-q", "--no-index", "--find-links", str(wheels), f"pip=={colab['pip']}")
    assert r.returncode == 0, r.stderr[-2000:]
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    linked = _torch_and_what_only_it_needs(colab)
    for dist in linked:
        _link_into(site, dist)
    # (--no-compile: no .pyc written for 110 packages, a third of the time; imports compile what they use)
    r = _pip(py, "install", "-q", "--no-compile", "--no-index", "--find-links", str(wheels), "-r", str(VERSIONS))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    before = _installed(py)
    assert {n: before.get(n) for n in colab} == colab, "the environment is not Colab's versions"
    assert before["torch"] == md.version("torch") and "cifarlab" not in before
    t_env = time.monotonic() - t0 - t_wheels

    # 2. 01_train in a kernel of that environment (the front end, papermill, is this one's, as Colab's is its
    # own): its setup cell finds no cifarlab and runs its %pip line, with a local repository for GitHub
    url = _git_repo_of_this_checkout(tmp_path / "repo")
    nb = json.loads((ROOT / "notebooks" / "01_train.ipynb").read_text())
    (cell,) = nbtool.setup_cells(nb)
    cell["source"] = nbtool.setup_cell(url)
    (tmp_path / "01_train.ipynb").write_text(json.dumps(nb))
    kernels = tmp_path / "jupyter" / "kernels" / "colab"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({"argv": [str(py), "-m", "ipykernel_launcher", "-f",
                                                              "{connection_file}"],
                                                     "display_name": "Colab-like", "language": "python"}))
    run_env = dict(CLEAN_ENV, JUPYTER_PATH=str(tmp_path / "jupyter"), CIFARLAB_DATA=str(tmp_path / "data"),
                   OMP_NUM_THREADS="1")
    out = tmp_path / "out"
    out.mkdir()
    params = f"OVERRIDES: {{dry_run: true}}\nOUT: '{out / 'runs'}'"
    t1 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "papermill", str(tmp_path / "01_train.ipynb"), str(out / "01.ipynb"),
                        "-k", "colab", "--cwd", str(tmp_path), "-y", params], capture_output=True, text=True,
                       env=run_env, timeout=900)
    t_nb = time.monotonic() - t1
    ran = json.loads((out / "01.ipynb").read_text()) if (out / "01.ipynb").is_file() else {"cells": []}
    (setup,) = [c for c in ran["cells"] if "cifarlab.notebook_setup()" in "".join(c["source"])] or [{}]
    setup_out = "".join("".join(o.get("text", "")) + json.dumps(o.get("evalue", ""))
                        for o in setup.get("outputs", []))
    assert r.returncode == 0, setup_out[-3000:] + r.stderr[-3000:]

    # 3. pip changed none of the packages there before, Colab's or this torch; it added cifarlab and the rest
    after = _installed(py)
    changed = {n: (v, after.get(n)) for n, v in before.items() if after.get(n) != v}
    assert changed == {}, f"installing cifarlab changed packages (name: (before, after)): {changed}"
    added = {n: after[n] for n in sorted(set(after) - set(before))}
    assert {"cifarlab", "onnx", "onnxscript", "onnxruntime", "papermill"} <= set(added), added
    assert f"cifarlab 0.1.0, torch {md.version('torch')}" in setup_out          # installed, imported, set up
    records = find_records(out / "runs")
    assert records and all(r.config.dry_run and r.metrics for r in records)

    # 4. the widget code under Colab's whole widget stack (ipywidgets 7.7.1 with Colab's traitlets, IPython,
    # ipykernel), where tests/test_ipywidgets7.py puts 7.7.1 alone over this environment's
    r = subprocess.run([str(py), str(ROOT / "tests" / "widget_checks.py"), "picker", "liveview"], capture_output=True,
                       text=True, env=dict(run_env, MPLBACKEND="Agg"), cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["picker"]["ipywidgets"] == "7.7.1" and seen["picker"]["state"]["controls_module"] == "1.5.0"
    assert all(s["past_the_end"] == [] and s["highlighted"] == s["ids"] for s in seen["picker"]["steps"])
    assert seen["liveview"]["outputs"] == ["widget", "png"] and seen["liveview"]["bar"]["style"] == "success"
    print(f"\ncolab env ({time.monotonic() - t0:.0f} s): wheels {t_wheels:.0f} s, environment {t_env:.0f} s "
          f"(torch linked: {len(linked)} distributions), 01_train {t_nb:.0f} s (its setup cell, the install: "
          f"{setup['metadata']['papermill']['duration']:.0f} s); pip added {added}")
