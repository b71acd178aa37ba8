"""The browser page (web/) in real headless Chromium, driven by Playwright, against a model this
test exports. Needs Debian's chromium and `npm ci` in web/ (.ci/run installs both); elsewhere it
skips, unless CIFARLAB_REQUIRE_BROWSER=1 makes a missing browser a failure."""
import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_NET
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.browser   # (and so slow: make test-all)
WEB = ROOT / "web"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ORT_JS = WEB / "node_modules" / "onnxruntime-web" / "dist" / "ort.wasm.min.js"


def _missing() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright (pip) is not installed"
    if not Path(CHROMIUM).exists():
        return "Debian's chromium is not installed"
    if not ORT_JS.exists():
        return "web/node_modules is missing: run `npm ci` in web/"
    return None


if _missing():
    if os.environ.get("CIFARLAB_REQUIRE_BROWSER"):
        pytest.fail(f"browser test required but {_missing()}", pytrace=False)
    pytest.skip(_missing(), allow_module_level=True)




@pytest.fixture(scope="module")
def site(tmp_path_factory, sample_subset):
    """A folder served on 127.0.0.1: the page (web/), and best/ from a small trained run."""
    from cifarlab.config import make_config
    from cifarlab.experiment import run
    from cifarlab.export import save_best

    root = tmp_path_factory.mktemp("site")
    (root / "web").symlink_to(WEB)
    rec = run(make_config("template", pooling="max", epochs=15, device="cpu"), out=root / "runs",
              subset=sample_subset, live="none")
    save_best(rec, root / "best", {}, sample_subset.x_test[:8])
    # a student's own net (issue 23): its best/ serves the page the same way
    (root / "mynet.py").write_text(TINY_NET)
    own = run(make_config("improved", model=f"{root / 'mynet.py'}:TinyNet", pooling="avg", epochs=2, device="cpu"),
              out=root / "runs", subset=sample_subset, live="none")
    save_best(own, root / "best_own", {}, sample_subset.x_test[:8])
    # a test image: a real test picture, upscaled to 96x96 like a photo from the web
    img = sample_subset.x_test[5].numpy()
    Image.fromarray(img).resize((96, 96), Image.NEAREST).save(root / "picture.png")
    (root / "broken.png").write_bytes(b"\x89PNG this is not really an image")
    # a model with the wrong input layout: NCHW float
    import torch
    wrong = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3)).eval()
    torch.onnx.export(wrong, (torch.zeros(1, 3, 32, 32),), str(root / "wrong.onnx"), dynamo=True,
                      external_data=False, input_names=["x"], output_names=["y"])
    (root / "classes4.json").write_text(json.dumps({"names": ["a", "b", "c", "d"]}))
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def _page(browser, url):
    page = browser.new_page()
    page.goto(url)
    return page


def _python_top(root: Path, picture: Path, best="best") -> str:
    """onnxruntime in Python on the same 32x32 pixels the page feeds."""
    from cifarlab.export import onnx_predict
    names = json.loads((root / best / "classes.json").read_text())["names"]
    return names, onnx_predict(root / best / "model.onnx", picture[None])[0]


def test_page_matches_onnxruntime_and_sweeps(site, browser, tmp_path):
    root, base = site
    page = _page(browser, f"{base}/web/index.html")
    page.set_input_files("#model-file", str(root / "best" / "model.onnx"))
    page.set_input_files("#classes-file", str(root / "best" / "classes.json"))
    page.wait_for_function("window.cifarlab.session !== null", timeout=30_000)
    page.set_input_files("#image-file", str(root / "picture.png"))
    page.wait_for_function("window.cifarlab.prediction !== undefined", timeout=30_000)
    pixels = np.array(page.evaluate("Array.from(window.cifarlab.source)"), dtype=np.uint8).reshape(32, 32, 3)
    names, logits = _python_top(root, pixels)
    pred = page.evaluate("window.cifarlab.prediction")
    assert pred["name"] == names[int(np.argmax(logits))]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    assert np.allclose(pred["probs"], p, atol=1e-4)
    assert names[pred["top"]] in page.inner_text("#top")
    # the page's shift is the notebooks' shift (cifarlab.evaluation.shift_images): same pixels
    import torch

    from cifarlab.evaluation import shift_images
    for dx, dy in ((3, -2), (-4, 4), (0, 1), (-8, 0)):
        js = np.array(page.evaluate(f"Array.from(shifted(window.cifarlab.source, {dx}, {dy}))"), np.uint8)
        py = shift_images(torch.from_numpy(pixels)[None], dx, dy)[0].numpy()
        assert np.array_equal(js.reshape(32, 32, 3), py), (dx, dy)
    page.click("#sweep")
    page.wait_for_function("window.cifarlab.sweep !== null", timeout=30_000)
    sweep = page.evaluate("window.cifarlab.sweep")
    assert sweep["shifts"] == list(range(-8, 9))
    assert len(sweep["horizontal"]) == len(sweep["vertical"]) == 17
    assert sweep["horizontal"][8] == pytest.approx(p[pred["top"]], abs=1e-4)  # shift 0 is the image itself
    page.fill("#dx", "3")
    page.dispatch_event("#dx", "input")
    page.wait_for_function("window.cifarlab.prediction.dx === 3")
    assert "shifted 3, 0" in page.inner_text("#top")
    out = Path(os.environ.get("CIFARLAB_ARTIFACTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / "web_page.png"), full_page=True)
    assert page.inner_text("#error") == ""
    page.close()


def test_model_from_url_parameters(site, browser):
    root, base = site
    page = _page(browser, f"{base}/web/index.html?model=/best/model.onnx&classes=/best/classes.json")
    page.wait_for_function("window.cifarlab.session !== null", timeout=30_000)
    assert "apple, otter, pickup_truck" in page.inner_text("#status")
    page.close()


def test_your_own_net_classifies_on_the_page_as_in_python(site, browser):
    root, base = site
    page = _page(browser, f"{base}/web/index.html?model=/best_own/model.onnx&classes=/best_own/classes.json")
    page.wait_for_function("window.cifarlab.session !== null", timeout=30_000)
    page.set_input_files("#image-file", str(root / "picture.png"))
    page.wait_for_function("window.cifarlab.prediction !== undefined", timeout=30_000)
    pixels = np.array(page.evaluate("Array.from(window.cifarlab.source)"), dtype=np.uint8).reshape(32, 32, 3)
    names, logits = _python_top(root, pixels, "best_own")
    pred = page.evaluate("window.cifarlab.prediction")
    p = np.exp(logits - logits.max())
    assert pred["name"] == names[int(np.argmax(logits))] and np.allclose(pred["probs"], p / p.sum(), atol=1e-4)
    assert page.inner_text("#error") == ""
    page.close()


@pytest.mark.parametrize("model, classes, words", [
    ("wrong.onnx", "best/classes.json", "input is not [N, 32, 32, 3]"),
    ("best/model.onnx", "classes4.json", "do not belong together"),
    ("best/classes.json", "best/classes.json", "not a model onnxruntime can open"),
])
def test_bad_model_shows_an_error_on_the_page(site, browser, model, classes, words):
    root, base = site
    page = _page(browser, f"{base}/web/index.html")
    page.set_input_files("#model-file", str(root / model))
    page.set_input_files("#classes-file", str(root / classes))
    page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=30_000)
    assert words in page.inner_text("#error") and page.is_visible("#error")
    assert page.evaluate("window.cifarlab.session") is None
    page.close()


def test_undecodable_image_shows_an_error(site, browser):
    root, base = site
    page = _page(browser, f"{base}/web/index.html")
    page.set_input_files("#image-file", str(root / "broken.png"))
    page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=30_000)
    assert "cannot be decoded" in page.inner_text("#error")
    page.close()
