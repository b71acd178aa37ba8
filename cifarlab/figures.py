"""Every figure the lab draws: training curves and confusion matrix (each run record), comparison plots,
image grids, what each pooling tactic does to an image, and the picker's thumbnail strips.

Figures are plain ``matplotlib.figure.Figure`` objects (no pyplot state: safe in scripts, threads
and workers); :func:`show` renders them in a notebook. This module imports nothing else of cifarlab.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def plot_curves(history: list[dict], title: str, best_epoch: int | None) -> Figure:
    """Cross-entropy and accuracy per epoch: train (mean line, 25-75% band over batches) vs validation.

    The train curves are measured on the training batches as trained: augmented, with dropout, and
    (with label smoothing) on the smoothed loss - so for the improved recipe the validation loss can
    sit below the train loss. The record's final train/val numbers are measured alike, in eval mode."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    if history:
        ep = np.array([h["epoch"] for h in history])
        for ax, key, label in ((axes[0], "loss", "cross-entropy"), (axes[1], "acc", "accuracy")):
            ax.fill_between(ep, [h[f"train_{key}_p25"] for h in history], [h[f"train_{key}_p75"] for h in history],
                            alpha=0.25, color="C0", label="train 25-75% of batches")
            ax.plot(ep, [h[f"train_{key}"] for h in history], color="C0", label="train (mean)")
            val = np.array([h.get(f"val_{key}") for h in history], dtype=float)   # None (no val split): nan
            if np.isfinite(val).any():
                ax.plot(ep, val, color="C1", label="validation")
            if best_epoch:
                ax.axvline(best_epoch, color="grey", ls=":", lw=1, label=f"best val epoch {best_epoch}")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 1.5"
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    return fig


def confusion_figure(cm: np.ndarray, names, title: str) -> Figure:
    """The confusion matrix (rows: true class), counts in the cells, drawn by scikit-learn."""
    from sklearn.metrics import ConfusionMatrixDisplay
    size = max(4.5, 0.5 * len(names) + 2.5)
    fig = Figure(figsize=(size, size * 0.9), layout="constrained")
    ax = fig.subplots()
    ConfusionMatrixDisplay(cm, display_labels=list(names)).plot(ax=ax, cmap="Blues", xticks_rotation=45,
                                                                colorbar=True, values_format="d")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    # One line each: a long title would be cut at the figure's edge.
    ax.set_title("\n".join(part.strip() for part in title.split(":")), fontsize=10)
    return fig


def plot_comparison(groups) -> Figure:
    """Validation and test accuracy (mean ± std over seeds) and training seconds per configuration
    (``groups``: cifarlab.comparison.Group, or anything with ``label``, ``mean(key)`` and ``std(key)``)."""
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(groups))
    w = 0.38
    labels = [g.label.replace(" (", "\n(") for g in groups]
    for off, key, label in ((-w / 2, "val_acc", "validation"), (w / 2, "test_acc", "test")):
        ax1.bar(x + off, [g.mean(key) for g in groups], w, yerr=[g.std(key) for g in groups], capsize=4, label=label)
    vals = [g.mean(k) - g.std(k) for g in groups for k in ("val_acc", "test_acc")]
    lo = np.nanmin(vals) if np.isfinite(vals).any() else 0.0
    ax1.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax1.legend()
    ax2.bar(x, [g.mean("train_seconds") for g in groups], 0.6, yerr=[g.std("train_seconds") for g in groups],
            capsize=4, color="C2")
    for ax, ylabel in ((ax1, "accuracy (mean ± std over seeds)"), (ax2, "training seconds per run")):
        ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    return fig


def plot_shift_accuracy(groups) -> Figure:
    """Test accuracy vs a horizontal and a vertical shift, per configuration: mean over seeds, band = min to
    max over seeds. Shifted images repeat their border pixels (as the web page's sweep does)."""
    fig = Figure(figsize=(12, 4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for i, g in enumerate(groups):
        recs = [r for r in g.records if r.metrics.get("shift_acc")]
        if not recs:
            continue
        shifts = recs[0].metrics["shift_acc"]["shifts"]
        for ax, axis in zip(axes, ("horizontal", "vertical")):
            v = np.array([r.metrics["shift_acc"][axis] for r in recs], dtype=float)    # None (no images): nan
            ax.plot(shifts, np.nanmean(v, 0), color=f"C{i % 10}", ls="-" if g.model == "improved" else "--",
                    marker="o", ms=3, label=g.label)
            if len(recs) > 1:
                ax.fill_between(shifts, np.nanmin(v, 0), np.nanmax(v, 0), color=f"C{i % 10}", alpha=0.15)
    for ax, axis in zip(axes, ("horizontal", "vertical")):
        ax.set_xlabel(f"{axis} shift (pixels; border pixels repeated)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (mean over seeds, band: min-max)")
    if groups:
        axes[1].legend(fontsize=8)
    return fig


def plot_validation_curves(groups) -> Figure:
    """Validation accuracy and loss per epoch, mean over seeds, one line per configuration."""
    fig = Figure(figsize=(12, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for i, g in enumerate(groups):
        n = min(len(r.history) for r in g.records)
        ep = np.arange(1, n + 1)
        for ax, key in zip(axes, ("val_acc", "val_loss")):
            v = np.array([[h.get(key) for h in r.history[:n]] for r in g.records], dtype=float)
            if np.isfinite(v).any():
                ax.plot(ep, np.nanmean(v, 0), color=f"C{i % 10}", label=g.label,
                        ls="-" if g.model == "improved" else "--")
    axes[0].set_ylabel("validation accuracy")
    axes[1].set_ylabel("validation cross-entropy")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if groups:
        axes[0].legend(fontsize=8)
    return fig


def forest_plot(rows, pooled, title: str, xlabel: str) -> Figure:
    """One row per subset (``rows``: name, difference, lo, hi), ``pooled`` (est, lo, hi, k; or None) as a
    diamond at the bottom: whether the subsets agree, and what they say together."""
    fig = Figure(figsize=(7, 0.32 * len(rows) + 1.5), layout="constrained")
    ax = fig.subplots()
    ys = list(range(len(rows), 0, -1))
    for y, (_, d, lo, hi) in zip(ys, rows):
        ax.errorbar(d, y, xerr=[[d - lo], [hi - d]], fmt="s", color="C0", ms=4, capsize=3)
    labels = [r[0] for r in rows]
    if pooled is not None:
        ax.fill([pooled.lo, pooled.est, pooled.hi, pooled.est], [0, 0.3, 0, -0.3], color="C3")
        ys, labels = ys + [0], labels + [f"pooled ({pooled.k} subsets)"]
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig


def _np(x):
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def examples_figure(images, labels, names, per_class: int = 8) -> Figure:
    """``per_class`` random images of each class, one row per class (raw uint8 NHWC in)."""
    images, labels = _np(images), _np(labels)
    k = len(names)
    rng = np.random.default_rng(0)
    fig = Figure(figsize=(per_class * 1.0 + 1.6, k * 1.05), layout="constrained")
    axes = np.atleast_2d(fig.subplots(k, per_class, squeeze=False))
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[c, j]
            ax.set(xticks=[], yticks=[])
            ax.spines[:].set_visible(False)
            if j < len(pick):
                ax.imshow(images[pick[j]], interpolation="nearest")
            if j == 0:
                ax.set_ylabel(names[c], rotation=0, ha="right", va="center", fontsize=9)
    return fig


def pooling_figure(image) -> Figure:
    """One image through the three pooling tactics: a 3x3 edge-detecting kernel (fixed, not learnt, so the
    maps differ only in how they are downsampled) applied with stride 2, or with stride 1 followed by 2x2
    max or average pooling, each with ReLU as in the nets. One colour scale for the maps; sizes in titles."""
    image = _np(image)
    grey = torch.as_tensor(image, dtype=torch.float32).mean(-1)[None, None] / 255       # 1x1x32x32
    kernel = torch.tensor([[-1.0, -1, -1], [-1, 8, -1], [-1, -1, -1]])[None, None]        # a Laplacian
    F = torch.nn.functional
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")      # no bright frame from zero padding
    conv = lambda stride: torch.relu(F.conv2d(padded, kernel, stride=stride))
    maps = [("conv, stride 1", conv(1)), ("stride: conv with stride 2", conv(2)),
            ("max: conv + 2x2 max pool", F.max_pool2d(conv(1), 2)),
            ("avg: conv + 2x2 avg pool", F.avg_pool2d(conv(1), 2))]
    fig = Figure(figsize=(13, 3.3), layout="constrained")
    axes = fig.subplots(1, 1 + len(maps))
    axes[0].imshow(image, interpolation="nearest")
    axes[0].set_title(f"image\n{image.shape[0]}x{image.shape[1]} pixels", fontsize=9)
    top = float(conv(1).max()) or 1.0
    for ax, (title, m) in zip(axes[1:], maps):
        ax.imshow(m[0, 0].numpy(), cmap="magma", vmin=0, vmax=top, interpolation="nearest")
        ax.set_title(f"{title}\n{m.shape[-2]}x{m.shape[-1]}", fontsize=9)
    for ax in axes:
        ax.set(xticks=[], yticks=[])
    return fig


def predictions_figure(images, true, pred, names, n: int = 24, cols: int = 8) -> Figure:
    """A grid of test images titled "pred (true)", green when right, red when wrong: the wrong ones first
    (up to half the grid), then random right ones."""
    images, true, pred = _np(images), _np(true), _np(pred)
    rng = np.random.default_rng(0)
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
    """Display Figures in a notebook as PNG images (IPython renders a plain ``Figure`` only once pyplot's
    inline backend is active; a PNG works in Jupyter, Colab and papermill)."""
    from IPython.display import Image, display
    for fig in figs:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        display(Image(data=buf.getvalue(), format="png"))


def strip_png(images) -> bytes:
    """A row of 32x32 images as one PNG, each shown 64x64 with 2 px gaps: the picker's thumbnails."""
    from PIL import Image
    canvas = Image.new("RGB", (len(images) * 66, 64), "white")
    for j, im in enumerate(images):
        canvas.paste(Image.fromarray(np.asarray(im)).resize((64, 64), Image.NEAREST), (j * 66, 0))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def placeholder_png(text: str = "no images on disk for this class") -> bytes:
    """A grey strip with a note, where a class has no images to show."""
    from PIL import Image, ImageDraw
    im = Image.new("RGB", (8 * 66, 64), (235, 235, 235))   # as wide as a strip of 8
    ImageDraw.Draw(im).text((8, 24), text, fill=(90, 90, 90))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()
