"""Colab's widgets: the picker and the live view with ipywidgets 7.7.1 (what Colab ships, and the only
widget protocol Colab's front end speaks) as well as with the project's ipywidgets 8.

ipywidgets 7.7.1 and ipython_genutils (the one module it imports that this venv lacks) are
installed by pip into a side folder (``.test-cache/``, ignored by git; ``$CIFARLAB_TEST_CACHE``
moves it) that goes first on the PYTHONPATH of a subprocess: the project's environment keeps 8.
The subprocess runs tests/widget_checks.py. Without network the 7.7.1 cases skip, unless
CIFARLAB_REQUIRE_IPYWIDGETS7=1 (CI) makes that a failure.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CIFARLAB_TEST_CACHE", ROOT / ".test-cache"))
COLAB = ("ipywidgets==7.7.1", "ipython_genutils==0.2.0")
pytestmark = pytest.mark.slow      # pip installs into a side folder once, then real runs: make test-all


@pytest.fixture(scope="session")
def ipywidgets7() -> Path:
    target = CACHE / "ipywidgets-7.7.1"
    if not (target / "ipywidgets" / "__init__.py").is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="ipyw7-", dir=CACHE))
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                            "--target", str(tmp), *COLAB], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            why = f"pip could not install {' '.join(COLAB)}: {(r.stdout + r.stderr).strip()[-600:]}"
            if os.environ.get("CIFARLAB_REQUIRE_IPYWIDGETS7"):
                pytest.fail(why, pytrace=False)
            pytest.skip(why)
        try:
            tmp.rename(target)                      # complete or absent, never half there
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another run put it there first
    return target


def _checks(what: str, side_folder: Path | None, tmp_path) -> dict:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "CIFARLAB_DATA": str(tmp_path)}
    env.pop("CI", None)
    # this checkout's cifarlab (not whichever the environment has installed), after ipywidgets 7.7.1
    env["PYTHONPATH"] = os.pathsep.join([str(side_folder)] * (side_folder is not None) + [str(ROOT)])
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "widget_checks.py"), what], capture_output=True,
                       text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])[what]


@pytest.fixture(params=["8", "7.7.1"])
def widgets(request, tmp_path):
    """(version, side folder or None): each check runs under both."""
    if request.param == "8":
        return "8", None
    return "7.7.1", request.getfixturevalue("ipywidgets7")


def test_picker_built_driven_and_serialized(widgets, tmp_path):
    version, side = widgets
    out = _checks("picker", side, tmp_path)
    assert out["ipywidgets"].startswith(version)
    if side is not None:
        assert out["ipywidgets_file"].startswith(str(side))
    assert out["ids0"] == [0, 55, 58] and out["n_options0"] == 100 and out["first3"] == [0, 55, 58]
    assert out["gallery"] == [[True, "png"]] * 3 and out["sources"] == {"0": "sample", "55": "sample", "58": "sample"}
    steps = {s["step"]: s for s in out["steps"]}
    for s in out["steps"]:
        assert s["past_the_end"] == [], s          # every state update consistent for the front end
        assert s["highlighted"] == s["ids"], s     # ... which highlights exactly the selection
    assert steps["list: apple + bicycle"]["command"] == 'make run-all CLASSES="apple bicycle"'
    added = steps["add this superclass"]
    assert added["ids"] == [0, 8, 13, 48, 58, 90]
    assert added["command"] == 'make run-all CLASSES="apple bicycle bus motorcycle pickup_truck train"'
    assert added["message"].startswith("6 classes selected")
    assert steps["filter tr"]["ids"] == added["ids"]  # a filter never drops the selection
    assert out["first_options_after"] == [0, 8, 13, 48, 58, 90]
    st = out["state"]
    assert st["version_major"] == 2 and st["select_index"] == [0, 1, 2, 3, 4, 5] and st["select_labels"] == 100
    assert st["image_in_state"] and st["json_chars"] > 10_000
    # the widget front end each version needs: Colab's is @jupyter-widgets/controls 1.5.0
    assert st["controls_module"] == {"8": "2.0.0", "7.7.1": "1.5.0"}[version]
    assert out["cleared"]["ids"] == [] and "Select at least two classes" in out["cleared"]["message"]


def test_notebook_view_bar_and_redraw_in_place(widgets, tmp_path):
    """Two real three-epoch runs through one notebook view (a grid): each starts by clearing the last one's
    output, then one tqdm widget bar, the figure redrawn every epoch in place (clear_output(wait=True), the
    bar shown again, the new figure), so there is never more than one bar and one figure on screen and the
    cell ends with one of each; the bar full and green."""
    version, side = widgets
    out = _checks("liveview", side, tmp_path)
    assert out["view"] == "NotebookView" and out["epochs"] == 3
    one_run = ["clear(wait)", "widget"] + ["clear(wait)", "widget", "png"] * 3
    assert out["events"] == one_run * 2
    assert out["outputs"] == ["widget", "png"] and out["most"] == {"widget": 1, "png": 1}
    bar = out["bar"]
    assert bar["children"] == ["HTML", "FloatProgress", "HTML"]
    assert bar["value"] == bar["max"] > 0 and bar["style"] == "success"
