"""Live view of a training run: a tqdm bar over all steps and the template's two-panel figure.

Modes (``make_view(mode)``):

* ``"notebook"`` - a tqdm bar, and the figure redrawn in place (``clear_output(wait=True)``) every
  ``config.plot_every`` epochs (default: about 25 redraws a run), like the course template; a grid
  of runs reuses one view: one bar and one figure on screen at a time;
* ``"quiet"`` - papermill, the command line, CI: about ten text lines a run, its final bar as one
  line and one final figure (no flood of redraws in a saved notebook or a log);
* ``"bar"`` - a text tqdm bar (interactive terminals); ``"none"`` - nothing.

``"auto"`` picks ``notebook`` in a Jupyter kernel, ``bar`` on a terminal, else (and whenever ``CI``
is set) ``quiet``. Under papermill the notebooks pass ``live=False`` (``quiet``).
"""
from __future__ import annotations

import os
import sys

from .figures import plot_curves, show


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
        shell = get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:
        return False


def show_record(record, curves: bool | None = None) -> None:
    """A finished run in a notebook: the reports (train, test), the confusion matrix, and the training
    curves when they were not already drawn live (``curves=None``: only for a reused record)."""
    from IPython.display import Image, display
    if not record.ok:
        print(f"{record.path}: {record.metrics.get('status')} - {record.metrics.get('error')}")
        return
    print("train set\n" + (record.path / "report_train.txt").read_text())
    print("test set\n" + (record.path / "report_test.txt").read_text())
    if curves if curves is not None else record.reused:
        display(Image(filename=str(record.path / "curves.png")))
    display(Image(filename=str(record.path / "confusion.png")))


class QuietView:
    """A few text lines per run and, in a notebook, the final figure (saved notebooks and logs stay short)."""

    title = None    # when set, shown instead of the run's own title (cifarlab.pretrain: "backbone ...")

    def start(self, cfg, total_steps: int, steps_per_epoch: int) -> None:
        self.name, self.total = self.title or cfg.title, total_steps
        self.every = max(1, round(total_steps / steps_per_epoch / 10))    # about ten lines a run
        print(f"training {self.name}: {total_steps} steps", flush=True)

    def epoch_end(self, result) -> None:
        h = result.history[-1]
        n = len(result.history)
        if n % self.every == 0 or n == 1:
            print(f"  epoch {h['epoch']:4d}  train loss {h['train_loss']:.4f} acc {h['train_acc']:.4f}  "
                  f"val loss {h['val_loss']:.4f} acc {h['val_acc']:.4f}  ({result.train_seconds:.1f} s)", flush=True)

    def close(self, result) -> None:
        from tqdm import tqdm
        # the run's bar as it ended (one line), and its final figure
        print(tqdm.format_meter(result.steps, self.total, result.train_seconds, prefix=self.name, unit="step",
                                ncols=100), flush=True)
        if result.history and _in_notebook():
            show(plot_curves(result.history, self.name, result.best_epoch))


class BarView:
    """A tqdm bar over all steps, advanced once per epoch (no per-step host work)."""

    title = None    # as QuietView's

    def __init__(self, notebook: bool = False):
        self.notebook = notebook

    def start(self, cfg, total_steps: int, steps_per_epoch: int) -> None:
        if self.notebook:
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
        self.name = self.title or cfg.title
        self.steps_per_epoch = steps_per_epoch
        self.bar = tqdm(total=total_steps, desc=self.name, unit="step")

    def epoch_end(self, result) -> None:
        h = result.history[-1]
        self.bar.set_postfix(loss=f"{h['train_loss']:.3f}", val_acc=f"{h['val_acc']:.3f}", refresh=False)
        self.bar.update(self.steps_per_epoch)

    def close(self, result) -> None:   # the engine calls it only after start
        self.bar.close()


class NotebookView(BarView):
    """The tqdm bar and the two-panel figure, redrawn in place. In a grid each run's start clears the cell's
    output: one bar and one figure on screen, below ``log`` (a line per run already done)."""

    def __init__(self):
        super().__init__(notebook=True)
        self.log: list[str] = []

    def _clear(self) -> None:
        from IPython.display import clear_output
        clear_output(wait=True)     # the old output goes when the new arrives: no flicker
        if self.log:
            print("\n".join(self.log), flush=True)

    def start(self, cfg, total_steps: int, steps_per_epoch: int) -> None:
        self._clear()               # the previous run's bar and figure
        super().start(cfg, total_steps, steps_per_epoch)
        # cfg.plot_every, else about 25 redraws a run (the course's every 20 epochs for its 500)
        self.every = cfg.plot_every or max(1, total_steps // steps_per_epoch // 25)

    def _redraw(self, result) -> None:
        from IPython.display import display

        self._clear()
        container = getattr(self.bar, "container", None)  # the widget bar, shown again after the clear
        if container is not None:
            display(container)
        show(plot_curves(result.history, self.name, result.best_epoch))

    def epoch_end(self, result) -> None:
        super().epoch_end(result)
        if len(result.history) % self.every == 0:
            self._redraw(result)

    def close(self, result) -> None:
        if result.history and len(result.history) % self.every != 0:
            self._redraw(result)
        super().close(result)


class NoView:
    def start(self, *a): pass
    def epoch_end(self, result): pass
    def close(self, result): pass


def make_view(mode="auto"):
    """A view for :func:`cifarlab.engine.train` (the modes: module docstring; ``True``/``False``, a notebook's
    ``LIVE``: ``"auto"``/``"quiet"``); a view object is returned as it is (one view for a grid of runs)."""
    if hasattr(mode, "epoch_end"):
        return mode
    if mode is True:
        mode = "auto"
    elif mode is False:
        mode = "quiet"
    if mode == "auto":
        if os.environ.get("CI"):
            mode = "quiet"
        elif _in_notebook():
            mode = "notebook"
        elif sys.stderr.isatty():
            mode = "bar"
        else:
            mode = "quiet"
    views = {"notebook": NotebookView, "bar": BarView, "none": NoView, "quiet": QuietView}
    if mode not in views:
        raise ValueError(f"view mode must be one of auto, {', '.join(views)}; got {mode!r}")
    return views[mode]()
