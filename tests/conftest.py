import io
import os
import signal
import subprocess
import sys
import tarfile
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Read before any test module imports torch, and inherited by every process a test starts (as test_jupyterlab and
# test_ipywidgets7 already set it): one torch thread, and OpenMP threads that sleep when idle (for code that sets
# more threads). The tests' tiny nets train faster on one thread than on two on this 2-core machine, and much faster
# when the other core is busy (another job, or a test's own subprocess): an epoch of the improved net at width 8 took
# 0.3 s on one thread, 0.5-5 s on two (CONTRIBUTING.md). Nothing a test checks depends on the thread count.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
SHARED_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar-100-python.tar.gz"
# The Ctrl-C tests press Ctrl-C as a user does in a terminal. A shell that starts a job in the background without
# job control (`cmd &` in a script, a subshell, nohup) starts it with SIGINT ignored; a process started so ignores
# it too, and so do its children (Python installs no KeyboardInterrupt then). Started so, pytest takes Python's
# usual handler, so that the processes its tests start begin with SIGINT at its default, as under a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(tryfirst=True)   # before pytest's own -m selection reads the markers
def pytest_collection_modifyitems(items):
    """A browser or cluster test is always slow too: `make test` (-m "not slow") leaves it out."""
    for item in items:
        if item.get_closest_marker("browser") or item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    """No test reads or writes the user's cache: the default data folder is an empty temp dir."""
    d = tmp_path / "cifarlab-data"
    d.mkdir()
    monkeypatch.setenv("CIFARLAB_DATA", str(d))
    monkeypatch.delenv("CIFARLAB_URL", raising=False)
    monkeypatch.delenv("CIFARLAB_MD5", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    yield d


@pytest.fixture(scope="session")
def full_data_dir(tmp_path_factory):
    """A data folder holding the extracted real CIFAR-100 (from ../shared), or skip."""
    if not SHARED_ARCHIVE.is_file():
        pytest.skip(f"the full CIFAR-100 archive is not at {SHARED_ARCHIVE}")
    d = tmp_path_factory.mktemp("full-cifar")
    with tarfile.open(SHARED_ARCHIVE, "r:gz") as tar:
        tar.extractall(d)
    assert (d / "cifar-100-python" / "train").is_file()
    return d


@pytest.fixture(scope="session")
def sample_subset(tmp_path_factory):
    """Classes 0, 55, 58 from the sample shipped in the package (an empty data folder)."""
    from cifarlab.data import load_subset
    return load_subset((0, 55, 58), data_dir=tmp_path_factory.mktemp("empty"), verbose=False)


@pytest.fixture
def cli(monkeypatch):
    """``python -m cifarlab ARGS`` run in this process: cifarlab/__main__.py's ``main(ARGS)``, its exit status and
    output as ``subprocess.run`` gives them, without the ~3 s a fresh interpreter pays to import torch. Warnings
    print to the captured stderr as in a fresh process. The real process is run by the tests of what only a
    process shows (tests/test_records_cli.py's end-to-end run and bad arguments, the closed pipe, the sweep's
    Ctrl-C). ``cwd`` and ``env`` apply for the call only."""
    def call(*args, cwd=None, env=None):
        from cifarlab.cli import main
        args = [str(a) for a in args]
        out, err = io.StringIO(), io.StringIO()
        with monkeypatch.context() as m, warnings.catch_warnings(), redirect_stdout(out), redirect_stderr(err):
            if cwd is not None:
                m.chdir(cwd)
            for k, v in (env or {}).items():
                m.setenv(k, v)
            warnings.resetwarnings()    # a fresh interpreter's filters: these four hidden, the rest shown once
            for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", hidden)
            warnings.showwarning = lambda msg, cat, file, line, *_: sys.stderr.write(
                warnings.formatwarning(msg, cat, file, line))
            try:
                rc = main(args)
            except SystemExit as e:     # argparse's errors
                rc = e.code
        return subprocess.CompletedProcess(["cifarlab", *args], rc, out.getvalue(), err.getvalue())
    return call


@pytest.fixture(scope="session")
def template_runs(sample_subset, tmp_path_factory):
    """A runs folder of two real records, trained once for every test that reads them: the template net with
    stride and with max pooling, 3 epochs, seed 0, on the shipped sample. Read only (copy it to change it)."""
    from cifarlab.config import make_config
    from cifarlab.experiment import run
    out = tmp_path_factory.mktemp("template-runs")
    for pooling in ("stride", "max"):
        run(make_config("template", pooling=pooling, epochs=3, device="cpu"), out=out, subset=sample_subset,
            live="none")
    return out


def fake_record(root, cfg, val_correct, test_correct, train_seconds=10.0, status="ok"):
    """A run record written by hand for tests of the comparison: the files a real record has, with the
    per-image correctness given (1 = right). The recorded predictions say exactly that: label 0 is
    true everywhere, a right image predicts 0, a wrong one predicts 1. The weights are the config's net,
    untrained; the figures and reports are stand-ins."""
    import hashlib
    import json

    import numpy as np
    import torch

    from cifarlab.classes import select_classes
    from cifarlab.figures import placeholder_png
    from cifarlab.models import build_model
    from cifarlab.records import identity_fields

    val_correct, test_correct = np.asarray(val_correct, bool), np.asarray(test_correct, bool)
    path = Path(root) / cfg.run_name
    path.mkdir(parents=True)
    text = cfg.to_json() + "\n"
    (path / "config.json").write_text(text)
    mean = lambda c: float(c.mean()) if len(c) else None
    (path / "history.json").write_text(json.dumps([{"epoch": 1, "val_acc": mean(val_correct), "val_loss": 0.5}]))
    for split, c in (("val", val_correct), ("test", test_correct)):
        true = np.zeros(len(c), np.int64)
        np.savez(path / f"{split}_predictions.npz", logits=np.zeros((len(c), 2), np.float32),
                 pred=(~c).astype(np.int64), true=true)
    torch.save(build_model(cfg).state_dict(), path / "model.pt")
    for name in ("curves.png", "confusion.png"):
        (path / name).write_bytes(placeholder_png(name))
    for name in ("report_train.txt", "report_test.txt"):
        (path / name).write_text("stand-in")
    metrics = {"status": status, "model": cfg.model, "pooling": cfg.pooling, "seed": cfg.seed,
               "val_acc": mean(val_correct), "test_acc": mean(test_correct), "test_macro_f1": mean(test_correct),
               "train_acc": 1.0, "train_seconds": train_seconds,
               "n_val": len(val_correct), "n_test": len(test_correct), "epochs": cfg.epochs, "device": "cpu",
               "classes": select_classes(cfg.classes).to_dict(),
               "overfitting": {"acc_gap": 0.0, "loss_gap": 0.0, "val_loss_rise": 0.0, "val_loss_min_epoch": 1},
               **identity_fields(cfg), "config_sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}
    if status != "ok":
        metrics["error"] = "the training loss became nan"
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


# A student's own net, as a file would hold it (issue 23): small enough to train in a second, with a pooling argument.
TINY_NET = """
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, num_classes, pooling="max"):
        super().__init__()
        pool = {"max": nn.MaxPool2d(2), "avg": nn.AvgPool2d(2), "stride": nn.Conv2d(8, 8, 2, stride=2)}[pooling]
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), pool, nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(8, num_classes))

    def forward(self, x):
        return self.body(x)
"""
