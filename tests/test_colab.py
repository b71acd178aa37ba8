"""Colab: one repository URL behind every badge and setup cell, and a setup cell of a few ordinary lines
that pip-installs cifarlab only where it is missing. That pip then changes none of Colab's packages is
tests/test_colab_env.py's job (a real install into Colab's versions)."""
import importlib.util
import json
import re
import subprocess
import sys
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
    (cell,) = [c for c in nb["cells"] if c["cell_type"] == "code" and "cifarlab.notebook_setup()" in _src(c)]
    return _src(cell)


def _code_lines(cell: str) -> list[str]:
    return [ln for ln in cell.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_badge_and_setup_cell_use_the_repository_url(path):
    """The one badge link is exactly the Colab URL of this notebook in pyproject's repository; the setup cell is
    three lines that pip-install exactly that repository where cifarlab is missing; no other GitHub
    address appears anywhere in the notebook."""
    nb = json.loads(path.read_text())
    links = [u for c in nb["cells"] if c["cell_type"] == "markdown"
             for u in re.findall(r"\]\((https://colab\.research\.google\.com/[^)\s]*)\)", _src(c))
             if not u.startswith("https://colab.research.google.com/assets/")]  # the badge image
    assert links == [f"https://colab.research.google.com/github/{OWNER}/{NAME}/blob/main/notebooks/{path.name}"]
    assert "colab-badge.svg" in _src(nb["cells"][0])
    code = _code_lines(_setup_cell(nb))
    assert [ln.split("#")[0].rstrip() for ln in code] == [
        "import importlib.util",
        f'if not importlib.util.find_spec("cifarlab"): get_ipython().run_line_magic("pip", \'install -q "cifarlab @ '
        f'git+{REPO_URL}"\')',
        "import cifarlab; cifarlab.notebook_setup()"]
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
    (cell,) = nbtool.setup_cells(nb)
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
    assert f'\'install -q "cifarlab @ git+{fork}"\'' in _setup_cell(nb)
    assert "placeholder" not in _setup_cell(nb)              # the note is for the placeholder only
    placeholder = nbtool.sync(json.loads(NOTEBOOKS[3].read_text()), NOTEBOOKS[3].name, nbtool.PLACEHOLDER)
    assert "your-org is a placeholder: pip cannot install from it" in _setup_cell(placeholder)
    with pytest.raises(ValueError, match="GitHub only"):
        nbtool.colab_url("https://gitlab.com/a/b", "x.ipynb")


# --- the setup cell, executed by IPython itself --------------------------------------------------
HARNESS = r'''
import importlib.util, json, sys
from IPython.core.interactiveshell import InteractiveShell

missing = sys.argv[2] == "missing"      # cifarlab not installed here ... until %pip "installs" it
real_find_spec, pip_lines = importlib.util.find_spec, []
importlib.util.find_spec = lambda name, *a: None if missing and name == "cifarlab" else real_find_spec(name, *a)

def pip(line):                          # the %pip magic, recorded instead of run
    global missing
    pip_lines.append(line)
    missing = False

shell = InteractiveShell.instance()
shell.register_magic_function(pip, "line", "pip")
result = shell.run_cell(open(sys.argv[1]).read())
print(json.dumps({"pip": pip_lines, "error": repr(result.error_in_exec or result.error_before_exec)}))
'''


def _run_setup_cell(tmp_path, url, missing):
    (tmp_path / "cell.ipy").write_text(nbtool.setup_cell(url))
    r = subprocess.run([sys.executable, "-c", HARNESS, str(tmp_path / "cell.ipy"), "missing" if missing else "there"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stdout


def test_setup_cell_installs_cifarlab_where_it_is_missing(tmp_path):
    url = "https://github.com/a-student/cifarlab"
    res, out = _run_setup_cell(tmp_path, url, missing=True)
    assert res == {"pip": [f'install -q "cifarlab @ git+{url}"'], "error": "None"}
    assert "cifarlab 0.1.0, torch" in out                  # then imported and set up in the same kernel


def test_setup_cell_runs_no_pip_where_cifarlab_is_there(tmp_path):
    res, out = _run_setup_cell(tmp_path, nbtool.PLACEHOLDER, missing=False)
    assert res == {"pip": [], "error": "None"}
    assert "cifarlab 0.1.0, torch" in out


def test_hand_run_notebooks_write_to_the_clones_out_folder(tmp_path, monkeypatch):
    import cifarlab

    monkeypatch.chdir(ROOT / "notebooks")
    assert cifarlab.out_path("runs") == str(ROOT / "out" / "runs")  # not notebooks/runs
    monkeypatch.chdir(tmp_path)
    assert cifarlab.out_path("best") == str(tmp_path.resolve() / "out" / "best")  # Colab: /content/out/best
    # Colab with Drive mounted: every notebook (each in its own runtime) writes to and reads from Drive
    drive = tmp_path / "drive" / "MyDrive"
    monkeypatch.setattr(cifarlab, "COLAB_DRIVE", drive)
    assert cifarlab.out_path("runs") == str(tmp_path.resolve() / "out" / "runs")   # not mounted
    drive.mkdir(parents=True)
    assert cifarlab.out_path("runs") == str(drive / "cifarlab" / "out" / "runs")
    if (ROOT / ".git").exists():
        for path in ("out/runs/x", "notebooks/runs/x", "notebooks/best/model.pt", "notebooks/out/x"):
            assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path
