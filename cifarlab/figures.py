"""Image grids: a few examples per class, and test images with predicted vs true labels."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure


def _np(x):
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def examples_figure(images, labels, names, per_class: int = 8, seed: int = 0) -> Figure:
    """``per_class`` random images of each class, one row per class (raw uint8 NHWC in)."""
    images, labels = _np(images), _np(labels)
    k = len(names)
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(per_class * 1.0 + 1.6, k * 1.05), layout="constrained")
    axes = np.atleast_2d(fig.subplots(k, per_class, squeeze=False))
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(pick):
                ax.imshow(images[pick[j]], interpolation="nearest")
            if j == 0:
                ax.set_ylabel(names[c], rotation=0, ha="right", va="center", fontsize=9)
    return fig


def predictions_figure(images, true, pred, names, n: int = 24, cols: int = 8, seed: int = 0) -> Figure:
    """A grid of test images titled "pred (true)": green when right, red when wrong.

    Shows the wrong ones first (up to half the grid), then random right ones."""
    images, true, pred = _np(images), _np(true), _np(pred)
    rng = np.random.default_rng(seed)
    wrong = np.flatnonzero(pred != true)
    right = np.flatnonzero(pred == true)
    take = list(rng.permutation(wrong)[: n // 2]) if len(wrong) else []
    take += list(rng.permutation(right)[: n - len(take)])
    rows = max(1, int(np.ceil(len(take) / cols)))
    fig = Figure(figsize=(cols * 1.4, rows * 1.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, take):
        ax.imshow(images[i], interpolation="nearest")
        ok = pred[i] == true[i]
        ax.set_title(f"{names[pred[i]]}" + ("" if ok else f"\n(true: {names[true[i]]})"),
                     fontsize=7, color="green" if ok else "red")
    return fig


def show(*figs) -> None:
    """Display matplotlib Figures in a notebook as PNG images.

    The library draws on plain ``Figure`` objects (no pyplot state, safe in scripts and
    threads); IPython only knows how to render those once pyplot's inline backend is
    active, so they are rendered to PNG here, which works in Jupyter, Colab and papermill."""
    import io
    from IPython.display import Image, display
    for fig in figs:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        display(Image(data=buf.getvalue(), format="png"))
