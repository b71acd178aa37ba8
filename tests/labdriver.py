"""A JupyterLab for the browser tests, and Playwright helpers to drive it the way a person does.

    with Lab(root, state) as lab:                       # jupyterlab from this venv, on 127.0.0.1
        page = new_page(browser)
        open_notebook(page, lab.url("lab/tree/01_train.ipynb?reset"))
        run_all(page); wait_all_executed(page)

The server is this venv's JupyterLab, so a notebook's ``python3`` kernel is this venv's Python (the
project's kernel), as with ``make lab``. Everything Jupyter would write or read per user (config,
settings, workspaces, runtime files, user kernels) lives in ``state``; nothing goes to the network:
the news feed, the update check and the extension manager's PyPI search are off, and the browser
resolves no host but 127.0.0.1. The server is stopped by its process group, which it was started in
(start_new_session); the kernels it started (each in a session of its own) are shut down through
the API first and any survivor is killed by its pid - nothing is stopped by name.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic",
                 # no network: every name but the loopback address fails to resolve
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]

# JupyterLab 4 / ipywidgets 8 selectors
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
KERNEL_STATUS = NOTEBOOK + " .jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator"  # data-status
KERNEL_NAME = NOTEBOOK + " .jp-NotebookPanel-toolbar .jp-KernelName"
CELL = NOTEBOOK + " .jp-Notebook .jp-Cell"
CODE_CELL = NOTEBOOK + " .jp-Notebook .jp-CodeCell"
PROMPT = CODE_CELL + " > .jp-Cell-inputWrapper .jp-InputArea-prompt"   # "[3]:", "[*]:", "[ ]:"
ERROR_OUTPUT = NOTEBOOK + " .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"
DIALOG = ".jp-Dialog"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    def __init__(self, root: Path, state: Path, env: dict | None = None, timeout: float = 120):
        self.root, self.state = Path(root), Path(state)
        self.extra_env = env or {}
        self.timeout = timeout
        self.token = secrets.token_hex(16)
        self.port = None
        self.proc = None
        self.ready_seconds = None

    def command(self) -> list[str]:
        lab = self.state / "config" / "lab"
        return [sys.executable, "-m", "jupyterlab", "--no-browser",
                "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
                "--ServerApp.terminals_enabled=False",
                *(["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []),
                "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.extension_manager=readonly",
                f"--LabApp.user_settings_dir={lab / 'user-settings'}", f"--LabApp.workspaces_dir={lab / 'workspaces'}"]

    def environment(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if k not in ("CI", "MPLBACKEND", "PYTHONPATH", "JUPYTER_PATH", "JUPYTER_PREFER_ENV_PATH")}
        env.update({"JUPYTER_CONFIG_DIR": str(self.state / "config"), "JUPYTER_CONFIG_PATH": str(self.state / "config"),
                    "JUPYTER_DATA_DIR": str(self.state / "data"), "JUPYTER_RUNTIME_DIR": str(self.state / "runtime"),
                    "IPYTHONDIR": str(self.state / "ipython"), "PYTHONUNBUFFERED": "1"})
        env.update(self.extra_env)
        return env

    def _write_settings(self) -> None:
        cfg = self.state / "config"
        (cfg / "labconfig").mkdir(parents=True, exist_ok=True)
        (cfg / "labconfig" / "page_config.json").write_text(json.dumps(
            {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
        settings = cfg / "lab" / "user-settings" / "@jupyterlab"
        no_news = {"fetchNews": "false", "checkForUpdates": False}
        for ext, name, value in [("apputils-extension", "notification", no_news),
                                 # every cell in the DOM (windowing would leave off-screen cells out)
                                 ("notebook-extension", "tracker", {"windowingMode": "none"}),
                                 # the test's copies are not saved back while it reads them
                                 ("docmanager-extension", "plugin", {"autosave": False})]:
            (settings / ext).mkdir(parents=True, exist_ok=True)
            (settings / ext / f"{name}.jupyterlab-settings").write_text(json.dumps(value))

    def start(self) -> "Lab":
        self.state.mkdir(parents=True, exist_ok=True)
        self._write_settings()
        self.port = free_port()
        self.log = open(self.state / "lab.log", "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.command(), env=self.environment(), cwd=self.root, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                self.get("status")
                break
            except OSError:
                pass
            if time.monotonic() - t0 > self.timeout:
                self.stop()
                raise TimeoutError(f"jupyter lab did not answer in {self.timeout} s: {self.log_tail()}")
            time.sleep(0.25)
        self.ready_seconds = time.monotonic() - t0
        return self

    def log_tail(self, n: int = 3000) -> str:
        return (self.state / "lab.log").read_text(errors="replace")[-n:]

    def url(self, path: str = "lab") -> str:
        return f"http://127.0.0.1:{self.port}/{path}{'&' if '?' in path else '?'}token={self.token}"

    def _request(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def get(self, path: str):
        return self._request(path)

    def shutdown_kernels(self) -> None:
        for k in self.get("kernels"):
            self._request(f"kernels/{k['id']}", "DELETE")

    def stop(self, grace: float = 15) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        import psutil
        children = []
        if proc.poll() is None:
            try:
                children = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                pass
            try:
                self.shutdown_kernels()
            except OSError:
                pass
            os.killpg(proc.pid, signal.SIGTERM)   # its own process group (start_new_session): the server
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for child in children:                   # the kernels it started, by pid
            try:
                child.wait(5)
            except psutil.TimeoutExpired:
                child.kill()
            except psutil.Error:
                pass
        self.log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --- the page -------------------------------------------------------------------------------------
def new_page(browser, viewport=(1400, 1800)):
    """A page that records console messages, page errors and requests that failed."""
    ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = ctx.new_page()
    page.console_log, page.failed = [], []
    page.on("console", lambda m: page.console_log.append((m.type, m.text, (m.location or {}).get("url", ""))))
    page.on("pageerror", lambda e: page.console_log.append(("pageerror", str(e), "")))
    page.on("requestfailed", lambda r: page.failed.append(r.url))
    return page


def unexpected_console_errors(page) -> list:
    """Console errors, less a resource that failed to load from outside (the Colab badge image: the
    browser resolves no host but 127.0.0.1) - any other failed load, or any other error, counts."""
    outside = [u for u in page.failed if not u.startswith(("http://127.0.0.1", "ws://127.0.0.1"))]
    allowed = [u for u in outside if u == "https://colab.research.google.com/assets/colab-badge.svg"]
    return [m for m in page.console_log if m[0] in ("error", "pageerror")
            and not (m[1].startswith("Failed to load resource") and m[2] in allowed)] + \
        [("failed request", u, "") for u in outside if u not in allowed]


def open_notebook(page, url: str, timeout: float = 90) -> str:
    """Open a notebook; wait until its kernel is idle. Returns the kernel name the toolbar shows.
    A "Select Kernel" dialog (the notebook's kernel not found) is an error."""
    page.goto(url)
    page.wait_for_selector(CODE_CELL, timeout=timeout * 1000)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if page.locator(DIALOG).count():
            raise AssertionError("a dialog opened instead of the kernel: " + page.locator(DIALOG).inner_text())
        name = page.locator(KERNEL_NAME).inner_text().strip() if page.locator(KERNEL_NAME).count() else None
        if name not in (None, "No Kernel") and page.locator(KERNEL_STATUS).get_attribute("data-status") == "idle":
            return name
        page.wait_for_timeout(250)
    raise TimeoutError("the kernel did not start")


def prompts(page) -> list[str]:
    return [t.strip() for t in page.locator(PROMPT).all_inner_texts()]


def run_all(page, tries: int = 3) -> None:
    """Run > Run All Cells. A click right after the kernel connected can be lost while JupyterLab
    lays out, so the menu is used again until a prompt leaves "[ ]:"."""
    for _ in range(tries):
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        item = page.locator(".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel",
                            has_text=re.compile(r"^Run All Cells$"))
        item.wait_for(state="visible")
        item.click()
        for _ in range(40):
            if any(p != "[ ]:" for p in prompts(page)):
                return
            page.wait_for_timeout(250)
        page.keyboard.press("Escape")
    raise AssertionError("Run All Cells did not start any cell")


def wait_all_executed(page, timeout: float = 300) -> list[str]:
    """Until every code cell shows [n]: and the kernel is idle; a cell that raised fails at once."""
    t0 = time.monotonic()
    while True:
        if page.locator(ERROR_OUTPUT).count():
            raise AssertionError("a cell raised: " + page.locator(ERROR_OUTPUT).first.inner_text()[-3000:])
        ps = prompts(page)
        if ps and all(re.fullmatch(r"\[\d+\]:", p) for p in ps) and \
                page.locator(KERNEL_STATUS).get_attribute("data-status") == "idle":
            return ps
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"cells not done after {timeout} s: {ps}")
        page.wait_for_timeout(300)


def cell(page, i: int):
    """The i-th cell of the notebook (markdown and code, 0-based, as in the .ipynb)."""
    return page.locator(CELL).nth(i)


def cell_index(nb_path: Path, needle: str) -> int:
    (i,) = [i for i, c in enumerate(json.loads(Path(nb_path).read_text())["cells"]) if needle in "".join(c["source"])]
    return i


def prepare(src: Path, dst: Path, **params) -> Path:
    """A copy of a suite notebook with some parameters changed in its parameters cell - what a person
    does before Run All."""
    nb = json.loads(Path(src).read_text())
    (cell_,) = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    lines = "".join(cell_["source"]).splitlines(keepends=True)
    for name, value in params.items():
        (i,) = [i for i, ln in enumerate(lines) if re.match(rf"{name}\s*=", ln)]
        lines[i] = f"{name} = {value!r}\n"
    cell_["source"] = lines
    Path(dst).write_text(json.dumps(nb, indent=1))
    return Path(dst)


# JavaScript: what an image shows. A thumbnail strip of real photos has thousands of colours; the
# placeholder strip (grey, with a line of text) a handful.
IMAGE_FACTS = """imgs => imgs.map(img => {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    let colours = 0;
    if (c.width && c.height) {
        const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, c.width, c.height).data, seen = new Set();
        for (let i = 0; i < d.length; i += 4) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
        colours = seen.size;
    }
    return {w: img.naturalWidth, h: img.naturalHeight, colours, complete: img.complete};
})"""

# JavaScript: watch one cell's outputs while it runs - the most figures and progress bars shown at
# once, and how many different figures were shown (a redraw replaces the image).
WATCH_OUTPUTS = """el => {
    const w = {maxImages: 0, maxBars: 0, figures: new Set(), samples: 0};
    const look = () => {
        const imgs = el.querySelectorAll('.jp-OutputArea img');
        w.maxImages = Math.max(w.maxImages, imgs.length);
        w.maxBars = Math.max(w.maxBars, el.querySelectorAll('.jp-OutputArea .widget-hprogress').length);
        imgs.forEach(i => w.figures.add(i.src.length + ':' + i.src.slice(-64)));
        w.samples += 1;
    };
    new MutationObserver(look).observe(el, {childList: true, subtree: true, attributes: true,
                                            attributeFilter: ['src', 'style']});
    window.__watch = w;
}"""
WATCHED = "() => ({maxImages: window.__watch.maxImages, maxBars: window.__watch.maxBars, " \
          "figures: window.__watch.figures.size, samples: window.__watch.samples})"

# JavaScript: the picker's list - options, which are highlighted, and which of those are in view.
LIST_FACTS = """s => {
    const opts = [...s.options], id = o => parseInt(o.textContent.replace(/\\u00a0/g, ' '));
    const inView = o => o.offsetTop - s.scrollTop >= 0
                        && o.offsetTop + o.offsetHeight - s.scrollTop <= s.clientHeight + 1;
    return {n: opts.length, first: opts.slice(0, 3).map(o => o.textContent.replace(/\\u00a0/g, ' ').trim()),
            highlighted: opts.filter(o => o.selected).map(id),
            highlightedInView: opts.filter(o => o.selected && inView(o)).map(id)};
}"""
