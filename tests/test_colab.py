"""Colab: one repository URL behind every badge and install cell, and an install cell that adds only
what is missing (never upgrading what the runtime has loaded) and fails clearly on the placeholder."""
import ast
import importlib.util
import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("nbtool", ROOT / "scripts" / "nbtool.py")
nbtool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbtool)

try:
    import tomllib
    REPO_URL = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
except ImportError:  # Python 3.10
    REPO_URL = re.search(r'^Repository = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
OWNER, NAME = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)", REPO_URL).groups()


def _src(cell) -> str:
    return "".join(cell["source"])


def _setup_cell(nb) -> str:
    (cell,) = [c for c in nb["cells"] if c["cell_type"] == "code" and "REPO_URL" in _src(c)]
    return _src(cell)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_badge_and_install_cell_use_the_repository_url(path):
    """Parsed, not searched: the one badge link is exactly the Colab URL of this notebook in
    pyproject's repository, the install cell assigns exactly that REPO_URL and installs from it
    without dependencies, and no other GitHub address appears anywhere in the notebook."""
    nb = json.loads(path.read_text())
    links = [u for c in nb["cells"] if c["cell_type"] == "markdown"
             for u in re.findall(r"\]\((https://colab\.research\.google\.com/[^)\s]*)\)", _src(c))
             if not u.startswith("https://colab.research.google.com/assets/")]  # the badge image
    assert links == [f"https://colab.research.google.com/github/{OWNER}/{NAME}/blob/main/notebooks/{path.name}"]
    assert "colab-badge.svg" in _src(nb["cells"][0])
    tree = ast.parse(_setup_cell(nb))
    assigned = [n.value.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                and [t.id for t in n.targets if isinstance(t, ast.Name)] == ["REPO_URL"]]
    assert assigned == [REPO_URL]
    pip = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "subprocess.check_call"]
    (call,) = pip
    args = call.args[0].elts
    assert [a.value for a in args if isinstance(a, ast.Constant)] == ["-m", "pip", "install", "-q", "--no-deps"]
    assert ast.unparse(args[-1]) == "f'git+{REPO_URL}'"
    assert "cifarlab.notebook_setup()" in _setup_cell(nb).splitlines()[-1]
    others = {u for u in re.findall(r"https?://github\.com/[\w.-]+/[\w.-]+", path.read_text())} - {REPO_URL}
    assert others == set()


def test_the_url_is_written_by_hand_in_one_place():
    """pyproject.toml has it; the notebooks are generated from it (nbtool sync); the placeholder also
    appears where nbtool recognizes it and where the docs explain it (docs/teaching.md). Nowhere else."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    holders = {f for f in tracked if f != "tests/test_colab.py" and (ROOT / f).is_file()
               and "github.com/your-org" in (ROOT / f).read_text(errors="ignore")}
    assert holders <= {"pyproject.toml", "scripts/nbtool.py", "README.md", "docs/teaching.md",
                       *(f"notebooks/{p.name}" for p in NOTEBOOKS)}
    assert "pyproject.toml" in holders


def test_notebooks_are_what_sync_writes():
    assert nbtool.check() == []


def test_check_fails_when_a_notebook_disagrees(tmp_path):
    nb = json.loads(NOTEBOOKS[1].read_text())
    (cell,) = [c for c in nb["cells"] if "REPO_URL" in _src(c)]
    cell["source"] = _src(cell).replace(REPO_URL, "https://github.com/someone-else/cifarlab")
    moved = tmp_path / NOTEBOOKS[1].name
    moved.write_text(nbtool.dumps(nb))
    assert len(nbtool.check([moved])) == 1
    badge_moved = tmp_path / NOTEBOOKS[2].name
    badge_moved.write_text(NOTEBOOKS[2].read_text().replace(f"github/{OWNER}/{NAME}/blob/main",
                                                            f"github/{OWNER}/{NAME}/blob/dev"))
    assert len(nbtool.check([badge_moved])) == 1
    # a fork: pyproject says another URL, so every committed notebook disagrees until `make notebooks`
    assert len(nbtool.check(NOTEBOOKS, repo_url="https://github.com/a-fork/cifarlab")) == len(NOTEBOOKS)


def test_sync_for_a_fork(tmp_path):
    fork = "https://github.com/a-student/cifarlab-fork"
    nb = nbtool.sync(json.loads(NOTEBOOKS[3].read_text()), NOTEBOOKS[3].name, fork)
    assert "https://colab.research.google.com/github/a-student/cifarlab-fork/blob/main/notebooks/03_reload.ipynb" \
        in _src(nb["cells"][0])
    assert f'REPO_URL = "{fork}"' in _setup_cell(nb)
    with pytest.raises(ValueError, match="GitHub only"):
        nbtool.colab_url("https://gitlab.com/a/b", "x.ipynb")


# --- the install cell, executed ------------------------------------------------------------------
HARNESS = r'''
import importlib.abc, json, subprocess, sys
calls, constraints = [], []

class Missing(importlib.abc.MetaPathFinder):      # cifarlab is not installed ... until pip "installs" it
    blocked = True
    def find_spec(self, name, path=None, target=None):
        if self.blocked and name.partition(".")[0] == "cifarlab":
            raise ModuleNotFoundError(f"No module named {name!r}")
finder = Missing()
sys.meta_path.insert(0, finder)

def check_call(cmd, **kw):
    calls.append(cmd[1:])
    finder.blocked = False
    import cifarlab.install                        # the runtime lacks onnx, onnxscript and onnxruntime
    real = cifarlab.install.installed_version
    cifarlab.install.installed_version = lambda n: None if n in ("onnx", "onnxscript", "onnxruntime") else real(n)
    return 0

def run(cmd, **kw):
    calls.append(cmd[1:])
    constraints.extend(open(cmd[cmd.index("-c") + 1]).read().split())
    return subprocess.CompletedProcess(cmd, 0, "", "")

subprocess.check_call, subprocess.run = check_call, run
import numpy, ipywidgets                           # what a kernel has loaded before the first cell
try:
    exec(compile(open(sys.argv[1]).read(), "setup cell", "exec"), {})
    error = None
except Exception as e:
    error = f"{type(e).__name__}: {e}"
print(json.dumps({"calls": calls, "constraints": constraints, "error": error}))
'''


def _run_setup_cell(tmp_path, url, blocked=True):
    cell = nbtool.setup_cell(url)
    (tmp_path / "cell.py").write_text(cell)
    harness = HARNESS if blocked else HARNESS.replace("blocked = True", "blocked = False")
    r = subprocess.run([sys.executable, "-c", harness, str(tmp_path / "cell.py")], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stdout


def test_install_cell_refuses_the_placeholder_before_any_pip(tmp_path):
    res, out = _run_setup_cell(tmp_path, nbtool.PLACEHOLDER)
    assert res["calls"] == []
    assert res["error"].startswith("RuntimeError: cifarlab is not installed here, and REPO_URL is still the "
                                   "placeholder https://github.com/your-org/cifarlab")
    assert "set REPO_URL in this cell to the repository this notebook comes from" in res["error"]


def test_install_cell_installs_cifarlab_alone_then_only_what_is_missing(tmp_path):
    import ipywidgets
    import numpy
    import torch

    url = "https://github.com/a-student/cifarlab"
    res, out = _run_setup_cell(tmp_path, url)
    assert res["error"] is None, res
    pip_cifarlab, pip_missing = res["calls"]
    assert pip_cifarlab == ["-m", "pip", "install", "-q", "--no-deps", f"git+{url}"]
    c = pip_missing.index("-c")
    assert pip_missing[:c] == ["-m", "pip", "install", "-q"]
    assert pip_missing[c + 2:] == ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"]  # not papermill
    pins = dict(p.split("==") for p in res["constraints"])
    assert pins["numpy"] == numpy.__version__ and pins["ipywidgets"] == ipywidgets.__version__
    assert pins["torch"] == version("torch") and "cifarlab" not in pins
    assert "no restart needed" in out and f"cifarlab 0.1.0, torch {torch.__version__}" in out


def test_install_cell_does_nothing_when_cifarlab_is_there(tmp_path):
    res, out = _run_setup_cell(tmp_path, nbtool.PLACEHOLDER, blocked=False)
    assert res == {"calls": [], "constraints": [], "error": None}
    assert "cifarlab 0.1.0, torch" in out


def test_install_missing_says_when_a_restart_is_needed(monkeypatch):
    from cifarlab import install

    versions = {"numpy": "1.0", "onnx": None}
    monkeypatch.setattr(install, "installed_version", lambda n: versions.get(n, "9.9"))
    monkeypatch.setattr(install, "requirements", lambda dist: [("numpy", "numpy>=1"), ("onnx", "onnx>=1.16")])
    monkeypatch.setattr(install, "loaded_distributions", lambda: {"numpy": "1.0"})

    def pip_that_upgrades_numpy(cmd, **kw):
        versions.update(numpy="2.0", onnx="1.17")
        return subprocess.CompletedProcess(cmd, 0, "", "")
    with pytest.raises(install.RestartNeeded, match=r"restart the runtime .*numpy 1.0 -> 2.0, which this kernel "
                                                     r"had already imported"):
        install.install_missing(run=pip_that_upgrades_numpy, quiet=True)

    versions.update(numpy="1.0", onnx=None)
    failing = lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "ERROR: ResolutionImpossible: numpy==1.0")
    with pytest.raises(install.InstallError, match="without changing a package this kernel already has"):
        install.install_missing(run=failing, quiet=True)
    versions["onnx"] = "1.17"
    assert install.install_missing(run=failing, quiet=True) == []  # nothing missing: pip is not run


def test_hand_run_notebooks_write_to_the_clones_out_folder(tmp_path, monkeypatch):
    import cifarlab

    monkeypatch.chdir(ROOT / "notebooks")
    assert cifarlab.out_path("runs") == str(ROOT / "out" / "runs")  # not notebooks/runs
    monkeypatch.chdir(tmp_path)
    assert cifarlab.out_path("best") == str(tmp_path.resolve() / "out" / "best")  # Colab: /content/out/best
    if (ROOT / ".git").exists():
        for path in ("out/runs/x", "notebooks/runs/x", "notebooks/best/model.pt", "notebooks/out/x"):
            assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path
