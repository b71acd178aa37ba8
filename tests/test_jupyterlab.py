"""The notebooks in a real front end: JupyterLab (pinned in the test extra, from this venv) on
127.0.0.1, driven in Debian's chromium by Playwright the way a student uses it - open a notebook,
set tiny parameters, Run All Cells, look at what is on the screen, click the picker.

Checked: the kernel the notebook asks for (``python3``) starts without a dialog; the picker shows the
100 classes with the selection highlighted and in view, real thumbnails for the shipped classes, and
a ``make run-all`` line that follows a list click and "add this superclass"; the nets' code and the
pooling figure; training a grid of two runs shows one progress bar and one figure redrawn in place; the
results, the comparison's plots and the reload's grid render; no browser console error but the Colab
badge image (no network here).

Screenshots go to $CIFARLAB_ARTIFACTS when it is set (with lab_timings.json). Needs playwright,
JupyterLab and Debian's chromium; skipped without them unless CIFARLAB_REQUIRE_BROWSER=1 (CI).
"""
import importlib.util
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _missing() -> str | None:
    for module in ("playwright", "jupyterlab", "psutil"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).exists():
        return "Debian's chromium is not installed"
    return None


if _missing():
    if os.environ.get("CIFARLAB_REQUIRE_BROWSER"):
        pytest.fail(f"browser test required but {_missing()}", pytrace=False)
    pytest.skip(_missing(), allow_module_level=True)

import psutil  # noqa: E402
from labdriver import (  # noqa: E402
    CHROMIUM_ARGS,
    IMAGE_FACTS,
    LIST_FACTS,
    WATCH_OUTPUTS,
    WATCHED,
    Lab,
    cell,
    cell_index,
    new_page,
    open_notebook,
    prepare,
    run_all,
    unexpected_console_errors,
    wait_all_executed,
)
from playwright.sync_api import expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.browser   # (and so slow: make test-all)
TIMINGS: dict = {}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    d = Path(os.environ.get("CIFARLAB_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    yield d
    (d / "lab_timings.json").write_text(json.dumps(TIMINGS, indent=1))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root, state = tmp_path_factory.mktemp("lab-root"), tmp_path_factory.mktemp("lab-state")
    data = tmp_path_factory.mktemp("lab-data")   # no CIFAR-100 on disk: the shipped sample is all there is
    # PYTHONPATH: the kernels import this checkout's cifarlab, whichever one the environment has installed
    lab = Lab(root, state, env={"CIFARLAB_DATA": str(data), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    lab.seen = []                                # every process the server started (its kernels)
    with lab:
        TIMINGS["server_ready_s"] = round(lab.ready_seconds, 1)
        server = psutil.Process(lab.proc.pid)
        yield lab
        lab.seen += server.children(recursive=True)
    # stopped when the fixture ends: the server and every kernel it started are gone
    alive = [p.pid for p in [server, *lab.seen] if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == []


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open_and_run(lab, browser, name: str, timeout: float = 300, watch: int | None = None):
    page = new_page(browser)
    t0 = time.monotonic()
    kernel = open_notebook(page, lab.url(f"lab/tree/{name}?reset"))
    assert kernel == "Python 3 (ipykernel)"      # the notebook's own kernel, no "Select Kernel" dialog
    lab.seen += psutil.Process(lab.proc.pid).children(recursive=True)
    if watch is not None:
        cell(page, watch).evaluate(WATCH_OUTPUTS)
    t1 = time.monotonic()
    run_all(page)
    wait_all_executed(page, timeout=timeout)
    TIMINGS[name] = {"open_s": round(t1 - t0, 1), "run_all_s": round(time.monotonic() - t1, 1)}
    return page


def _text(locator) -> str:
    return locator.locator(".jp-OutputArea").inner_text()


def _images(locator) -> list[dict]:
    return locator.locator(".jp-OutputArea img").evaluate_all(IMAGE_FACTS)


def _close(lab, page):
    lab.shutdown_kernels()
    page.context.close()


def test_training_notebook_as_a_student_runs_it(lab, browser, artifacts):
    # the lab's grid from one notebook, small: the template net, two tactics, one seed, two epochs
    nb = prepare(NOTEBOOKS / "01_train.ipynb", lab.root / "01_train.ipynb", MODELS="template",
                 POOLINGS=["stride", "max"], SEEDS=1, EPOCHS=2, OUT=str(lab.root / "runs-01"))
    i_picker, i_train, i_results = (cell_index(nb, "picker = ClassPicker("), cell_index(nb, "run_grid(plan"),
                                    cell_index(nb, "show_record(records[0]"))
    page = _open_and_run(lab, browser, nb.name, watch=i_train)

    # --- the picker, as it first appears ------------------------------------------------------------
    picker = cell(page, i_picker)
    select = picker.locator(".widget-select-multiple select")
    facts = select.evaluate(LIST_FACTS)
    assert facts["n"] == 100 and facts["highlighted"] == [0, 55, 58] == facts["highlightedInView"]
    assert [f.split(":")[0] for f in facts["first"]] == ["0", "55", "58"]
    labels = picker.locator(".widget-vbox .widget-html-content").all_inner_texts()
    assert [t for t in labels if "(shipped sample)" in t] == ["0: apple (shipped sample)", "55: otter (shipped sample)",
                                                             "58: pickup_truck (shipped sample)"]
    thumbs = picker.locator("img.widget-image").evaluate_all(IMAGE_FACTS)
    assert len(thumbs) == 3
    for t in thumbs:   # a strip of real pictures (thousands of colours), not the grey placeholder
        assert t["complete"] and t["w"] > 0 and t["h"] > 0 and t["colours"] > 1000, t
    command = picker.locator(".widget-html-content", has_text="Run the suite with them")
    expect(command).to_contain_text('make run-all CLASSES="apple otter pickup_truck"')
    expect(command).to_contain_text("CLASSES = [0, 55, 58]")          # the line for the parameters cell
    picker.screenshot(path=str(artifacts / "lab_01_picker.png"))

    # --- a click in the list, then a whole superclass ------------------------------------------------
    select.locator("option", has_text=re.compile(r"^\s*6:")).click(modifiers=["Control"])
    expect(command).to_contain_text('make run-all CLASSES="apple bee otter pickup_truck"', timeout=15_000)
    picker.locator(".widget-dropdown select").select_option(label="flowers")
    page.wait_for_function("s => s.options.length === 9", arg=select.element_handle(), timeout=15_000)
    picker.locator("button", has_text="add this superclass").click()
    expect(command).to_contain_text(
        'make run-all CLASSES="apple bee orchid otter pickup_truck poppy rose sunflower tulip"', timeout=15_000)
    picker.locator(".widget-dropdown select").select_option(index=0)      # all superclasses again
    page.wait_for_function("s => s.options.length === 100 && [...s.options].filter(o => o.selected).length === 9",
                           arg=select.element_handle(), timeout=15_000)
    facts = select.evaluate(LIST_FACTS)
    chosen = [0, 6, 54, 55, 58, 62, 70, 82, 92]
    assert sorted(facts["highlighted"]) == chosen and sorted(facts["highlightedInView"]) == chosen
    page.wait_for_function("c => c.querySelectorAll('img.widget-image').length === 9", arg=picker.element_handle(),
                           timeout=15_000)
    thumbs = picker.locator("img.widget-image").evaluate_all(IMAGE_FACTS)
    assert sum(t["colours"] > 1000 for t in thumbs) == 3   # the sample's three classes
    placeholders = [t for t in thumbs if t["colours"] <= 1000]
    assert len(placeholders) == 6 and all(t["w"] > 0 and t["colours"] < 200 for t in placeholders), placeholders
    assert picker.locator(".widget-html-content", has_text="the full dataset is not on disk yet").count() == 6
    picker.screenshot(path=str(artifacts / "lab_01_picker_changed.png"))

    # --- the nets' code and what each pooling tactic does ------------------------------------------------
    assert "class TemplateCNN(nn.Module)" in _text(cell(page, cell_index(nb, "getsource(models.TemplateCNN)")))
    improved = _text(cell(page, cell_index(nb, "getsource(models.ImprovedCNN)")))
    assert "def _conv_bn(" in improved and "class ImprovedCNN(nn.Module)" in improved
    pooling = cell(page, cell_index(nb, "pooling_figure("))
    (image,) = _images(pooling)
    assert image["w"] > 900 and image["colours"] > 100, image   # the image and four feature maps
    pooling.screenshot(path=str(artifacts / "lab_01_pooling.png"))

    # --- training the grid: one bar, one figure redrawn in place, run after run ----------------------------
    watched = page.evaluate(WATCHED)
    train = cell(page, i_train)
    assert train.locator(".jp-OutputArea .widget-hprogress").count() == 1
    bar = train.locator(".widget-hprogress .progress-bar")
    assert bar.evaluate("e => e.style.width") == "100%" and "progress-bar-success" in bar.get_attribute("class")
    assert re.search(r"\b(\d+)/\1\b", train.locator(".jp-OutputArea .widget-hbox").inner_text())  # all steps done
    figure = _images(train)
    assert len(figure) == 1 and figure[0]["w"] > 0 and figure[0]["colours"] > 20
    assert watched["maxImages"] == 1 and watched["maxBars"] == 1, watched   # never two at once, over both runs
    assert watched["figures"] >= 4, watched                                 # redrawn (one per epoch and run)
    assert "1/2 template net, stride pooling, seed 0: trained" in _text(train)   # the first run, done
    table = _text(cell(page, cell_index(nb, "grid_table(done)")))
    assert "template net, stride pooling, seed 0  trained" in table and "template net, max pooling, seed 0" in table
    train.screenshot(path=str(artifacts / "lab_01_training.png"))

    # --- results: the reports and the confusion matrix -------------------------------------------------
    results = cell(page, i_results)
    text = _text(results)
    assert "train set" in text and "test set" in text
    assert all(w in text for w in ("precision", "recall", "f1-score", "apple", "otter", "pickup_truck"))
    images = _images(results)   # the confusion matrix (and nothing twice)
    assert 1 <= len(images) <= 2 and all(i["w"] > 0 and i["colours"] > 20 for i in images), images
    results.screenshot(path=str(artifacts / "lab_01_results.png"))

    whole = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").inner_text()
    assert "Error displaying widget" not in whole and "javascript error" not in whole.lower()
    assert unexpected_console_errors(page) == []
    _close(lab, page)


@pytest.fixture(scope="module")
def runs(lab, sample_subset):
    """Three tiny runs (template net, 2 epochs, one per pooling tactic) of the shipped classes."""
    from cifarlab.config import make_config
    from cifarlab.experiment import run

    t0 = time.monotonic()
    folder = lab.root / "runs-02"
    for pooling in ("stride", "max", "avg"):
        run(make_config("template", pooling=pooling, epochs=2, device="cpu"), out=folder, subset=sample_subset,
            live="none")
    TIMINGS["runs_fixture_s"] = round(time.monotonic() - t0, 1)
    return folder


def test_comparison_then_reload_notebooks(lab, browser, artifacts, runs):
    best = lab.root / "best"
    nb = prepare(NOTEBOOKS / "02_compare.ipynb", lab.root / "02_compare.ipynb", RUNS=str(runs), BEST=str(best))
    page = _open_and_run(lab, browser, nb.name)
    tables = _text(cell(page, cell_index(nb, "comparison = compare(")))
    assert all(c in tables for c in ("template/stride", "template/max", "template/avg"))
    plots = cell(page, cell_index(nb, "plot_comparison("))
    images = _images(plots)
    assert len(images) == 2 and all(i["w"] > 0 and i["colours"] > 20 for i in images), images
    plots.screenshot(path=str(artifacts / "lab_02_plots.png"))
    assert "distinguishable" in _text(cell(page, cell_index(nb, "print(comparison.verdicts)")))
    assert "Choice: " in _text(cell(page, cell_index(nb, 'print("Choice:"')))
    chosen = cell(page, cell_index(nb, "show_record(comparison.choice.record"))
    assert "test set" in _text(chosen) and len(_images(chosen)) == 2   # curves and confusion matrix
    assert "model.onnx" in _text(cell(page, cell_index(nb, "sorted(p.name for p in Path(BEST)")))
    assert unexpected_console_errors(page) == []
    _close(lab, page)

    # the reload notebook, in its own fresh kernel, on what the comparison saved
    nb = prepare(NOTEBOOKS / "03_reload.ipynb", lab.root / "03_reload.ipynb", BEST=str(best))
    page = _open_and_run(lab, browser, nb.name)
    check = _text(cell(page, cell_index(nb, "verify_reload(")))
    assert re.search(r"PyTorch : 300/300 predictions as recorded", check), check
    assert re.search(r"ONNX {4}: 300/300 predictions as recorded", check), check
    grid = cell(page, cell_index(nb, "predictions_figure("))
    (image,) = _images(grid)
    assert image["w"] > 0 and image["colours"] > 1000   # 24 test pictures with their predictions
    grid.screenshot(path=str(artifacts / "lab_03_grid.png"))
    assert unexpected_console_errors(page) == []
    _close(lab, page)
