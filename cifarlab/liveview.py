"""Live view of a training run: a tqdm bar over all steps and the template's two-panel figure.

Modes (``make_view(mode)``):

* ``"notebook"`` - a tqdm bar, and every ``config.plot_every`` epochs ``clear_output(wait=True)``
  and the figure redrawn in place, like the course template;
* ``"quiet"`` - for papermill, the command line and CI: about ten short text lines per run
  and one final figure - no flood of redraws or bar updates in a saved notebook or a log;
* ``"bar"`` - a text tqdm bar (interactive terminals);
* ``"none"`` - nothing.

``"auto"`` picks ``notebook`` inside a Jupyter kernel, ``bar`` on a terminal, else ``quiet``;
``CI`` in the environment always means ``quiet``. Under papermill there is no front end to
watch, so the notebooks pass ``live=False`` (``quiet``) from their parameters.
"""
from __future__ import annotations

import os
import sys

import numpy as np
from matplotlib.figure import Figure


def plot_curves(history: list[dict], title: str = "", best_epoch: int | None = None) -> Figure:
    """Cross-entropy and accuracy per epoch: train (mean line, 25-75% band over batches) vs validation.

    The train curves are measured on the training batches as trained: augmented, with dropout, and
    (with label smoothing) on the smoothed loss - so for the improved recipe the validation loss can
    sit below the train loss. The record's final train/val numbers are measured alike, in eval mode."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    if history:
        ep = np.array([h["epoch"] for h in history])
        for ax, key, label in ((axes[0], "loss", "cross-entropy"), (axes[1], "acc", "accuracy")):
            mean = np.array([h[f"train_{key}"] for h in history])
            ax.fill_between(ep, [h[f"train_{key}_p25"] for h in history], [h[f"train_{key}_p75"] for h in history],
                            alpha=0.25, color="C0", label="train 25-75% of batches")
            ax.plot(ep, mean, color="C0", label="train (mean)")
            val = np.array([h.get(f"val_{key}", np.nan) for h in history], dtype=float)
            if np.isfinite(val).any():
                ax.plot(ep, val, color="C1", label="validation")
            if best_epoch:
                ax.axvline(best_epoch, color="grey", ls=":", lw=1, label=f"best val epoch {best_epoch}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[1].legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
        shell = get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:
        return False


class QuietView:
    """A few text lines per run and the final figure (saved notebooks and logs stay short)."""

    def __init__(self, stream=None, show_final: bool = False, lines: int = 10):
        self.stream = stream or sys.stdout
        self.show_final = show_final
        self.lines = lines

    def start(self, cfg, total_steps: int, steps_per_epoch: int) -> None:
        self.cfg = cfg
        self.every = max(1, round(total_steps / steps_per_epoch / self.lines))
        print(f"training {cfg.title}: {total_steps} steps", file=self.stream, flush=True)

    def epoch_end(self, result) -> None:
        h = result.history[-1]
        n = len(result.history)
        if n % self.every == 0 or n == 1:
            print(f"  epoch {h['epoch']:4d}  train loss {h['train_loss']:.4f} acc {h['train_acc']:.4f}  "
                  f"val loss {h['val_loss']:.4f} acc {h['val_acc']:.4f}  ({result.train_seconds:.1f} s)",
                  file=self.stream, flush=True)

    def close(self, result) -> None:
        if self.show_final and result.history:
            from .figures import show
            show(plot_curves(result.history, self.cfg.title, result.best_epoch))


class BarView:
    """A tqdm bar over all steps, advanced once per epoch (no per-step host work)."""

    def __init__(self, notebook: bool = False):
        self.notebook = notebook
        self.bar = None

    def start(self, cfg, total_steps: int, steps_per_epoch: int) -> None:
        if self.notebook:
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
        self.cfg = cfg
        self.steps_per_epoch = steps_per_epoch
        self.bar = tqdm(total=total_steps, desc=cfg.title, unit="step")

    def _postfix(self, result) -> None:
        h = result.history[-1]
        self.bar.set_postfix(loss=f"{h['train_loss']:.3f}", val_acc=f"{h['val_acc']:.3f}", refresh=False)

    def epoch_end(self, result) -> None:
        self._postfix(result)
        self.bar.update(self.steps_per_epoch)

    def close(self, result) -> None:
        if self.bar is not None:
            self.bar.close()


class NotebookView(BarView):
    """tqdm bar plus the two-panel figure, redrawn in place every ``plot_every`` epochs."""

    def __init__(self):
        super().__init__(notebook=True)

    def _redraw(self, result) -> None:
        from IPython.display import clear_output, display

        from .figures import show
        clear_output(wait=True)
        container = getattr(self.bar, "container", None)  # the widget bar, shown again after the clear
        if container is not None:
            display(container)
        show(plot_curves(result.history, self.cfg.title, result.best_epoch))

    def epoch_end(self, result) -> None:
        super().epoch_end(result)
        if len(result.history) % self.cfg.plot_every == 0:
            self._redraw(result)

    def close(self, result) -> None:
        if result.history and len(result.history) % self.cfg.plot_every != 0:
            self._redraw(result)
        super().close(result)


class NoView:
    def start(self, *a): pass
    def epoch_end(self, result): pass
    def close(self, result): pass


def make_view(mode="auto"):
    """A view object for :func:`cifarlab.engine.train` (see the module docstring for the modes).

    ``True``/``False`` are accepted as ``"auto"``/``"quiet"`` (a notebook's ``LIVE`` parameter)."""
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
    views = {"notebook": NotebookView, "bar": BarView, "none": NoView,
             "quiet": lambda: QuietView(show_final=_in_notebook())}
    if mode not in views:
        raise ValueError(f"view mode must be one of auto, {', '.join(views)}; got {mode!r}")
    return views[mode]()
