"""Comparing runs from their records: mean ± std over seeds, a stated choice rule, plots.

The rule (``CHOICE_RULE``) uses validation accuracy only - the test set reports, it never
chooses. Seed-to-seed spread decides what counts as a tie.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from .records import Record

CHOICE_RULE = (
    "Choose the configuration (model, pooling) with the highest mean validation accuracy over seeds. "
    "Configurations whose mean is within one seed-to-seed standard deviation of the best count as tied; "
    "among tied ones the fastest (mean training seconds) wins. From the chosen configuration, the seed "
    "with the highest validation accuracy is saved. The test set is reported, never used to choose.")

METRICS = (("test_acc", "test acc"), ("test_macro_f1", "test macro-F1"), ("val_acc", "val acc"),
           ("train_acc", "train acc"), ("train_seconds", "train s"), ("acc_gap", "acc gap"),
           ("loss_gap", "loss gap"), ("val_loss_rise", "val-loss rise"))


def _value(record: Record, key: str) -> float:
    m = record.metrics
    v = m["overfitting"].get(key) if key in m["overfitting"] else m.get(key)
    return float("nan") if v is None else float(v)


@dataclass
class Group:
    """All seeds of one (model, pooling) configuration."""

    model: str
    pooling: str
    records: list[Record]

    @property
    def n(self) -> int:
        return len(self.records)

    def values(self, key: str) -> np.ndarray:
        return np.array([_value(r, key) for r in self.records], dtype=float)

    def mean(self, key: str) -> float:
        return float(np.nanmean(self.values(key)))

    def std(self, key: str) -> float:
        v = self.values(key)
        return float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else 0.0

    @property
    def label(self) -> str:
        return f"{self.model}/{self.pooling}"


def group_records(records: list[Record]) -> list[Group]:
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.config.model, r.config.pooling)].append(r)
    order = {"stride": 0, "max": 1, "avg": 2}
    return [Group(m, p, sorted(rs, key=lambda r: r.config.seed))
            for (m, p), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9)))]


def _pm(mean: float, std: float, n: int, digits: int = 4) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def table(groups: list[Group], model: str | None = None) -> str:
    """A text table: one row per pooling tactic, mean ± std over seeds of each metric."""
    rows = [g for g in groups if model is None or g.model == model]
    head = ["config", "seeds"] + [name for _, name in METRICS]
    body = []
    for g in rows:
        cells = [g.label, str(g.n)]
        for key, _ in METRICS:
            digits = 1 if key == "train_seconds" else (3 if key in ("loss_gap", "val_loss_rise") else 4)
            cells.append(_pm(g.mean(key), g.std(key), g.n, digits))
        body.append(cells)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in body])


@dataclass
class Choice:
    group: Group
    record: Record            # the seed that is saved
    tied: list[Group]         # groups within the tie margin of the best mean val acc (incl. the winner)
    explanation: str
    distinguishable: str


def choose(groups: list[Group]) -> Choice:
    """Apply :data:`CHOICE_RULE` to the groups."""
    if not groups:
        raise ValueError("no completed run records to compare: run the training notebook (or "
                         "`python -m cifarlab train`) first")
    best = max(groups, key=lambda g: g.mean("val_acc"))
    margin = best.std("val_acc")
    tied = [g for g in groups if best.mean("val_acc") - g.mean("val_acc") <= margin]
    winner = min(tied, key=lambda g: g.mean("train_seconds"))
    record = max(winner.records, key=lambda r: (_value(r, "val_acc"), -r.config.seed))
    if len(tied) > 1:
        why = (f"{best.label} has the highest mean validation accuracy ({best.mean('val_acc'):.4f}); "
               f"{', '.join(g.label for g in tied if g is not best)} "
               f"{'is' if len(tied) == 2 else 'are'} within its seed-to-seed std ({margin:.4f}), "
               f"so the fastest of them wins: {winner.label} ({winner.mean('train_seconds'):.1f} s per run).")
    else:
        why = (f"{winner.label} has the highest mean validation accuracy ({winner.mean('val_acc'):.4f}), "
               f"more than one seed-to-seed std ({margin:.4f}) above every other configuration.")
    why += f" Saved: seed {record.config.seed} (validation accuracy {_value(record, 'val_acc'):.4f})."
    return Choice(winner, record, tied, why, distinguishability(groups))


def distinguishability(groups: list[Group], key: str = "test_acc") -> str:
    """Say, per model, whether the pooling tactics differ by more than noise.

    Two configurations differ when their means are more than two standard errors apart. A
    mean's standard error has two parts: the seed-to-seed spread (std / sqrt(seeds)) and the
    sampling error of the test set itself, sqrt(p(1-p)/n) - the same n test images serve every
    seed, so more seeds never shrink that second part (300 images: about 1.7 points at p = 0.9)."""
    sentences = []
    for model in sorted({g.model for g in groups}):
        gs = [g for g in groups if g.model == model]
        if len(gs) < 2:
            continue

        def se(g: Group) -> float:
            p, n = g.mean(key), g.records[0].metrics.get("n_test") or 300
            return math.sqrt(g.std(key) ** 2 / g.n + max(p * (1 - p), 1e-12) / n)

        pairs = []
        for i in range(len(gs)):
            for j in range(i + 1, len(gs)):
                a, b = gs[i], gs[j]
                diff = abs(a.mean(key) - b.mean(key))
                pairs.append((a, b, diff, 2 * math.hypot(se(a), se(b))))
        apart = [(a, b, d, t) for a, b, d, t in pairs if d > t]
        if not apart:
            widest = max(pairs, key=lambda p: p[2])
            sentences.append(
                f"{model} net: the pooling tactics are NOT distinguishable on {key.replace('_', ' ')} - the largest "
                f"difference ({widest[0].pooling} vs {widest[1].pooling}: {widest[2]:.4f}) is within two standard "
                f"errors ({widest[3]:.4f}). Separating them would take more test images; more seeds alone cannot.")
        else:
            parts = [f"{a.pooling} vs {b.pooling} ({d:.4f} > {t:.4f})" for a, b, d, t in apart]
            sentences.append(f"{model} net: distinguishable beyond two standard errors on {key.replace('_', ' ')}: "
                             + "; ".join(parts) + ". Other pairs are within noise.")
    return " ".join(sentences) if sentences else "Only one configuration per model: nothing to distinguish."


def plot_comparison(groups: list[Group]) -> Figure:
    """Test and validation accuracy (mean ± std over seeds) and training seconds per configuration."""
    fig = Figure(figsize=(12, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(groups))
    w = 0.38
    for off, key, label in ((-w / 2, "val_acc", "validation"), (w / 2, "test_acc", "test")):
        ax1.bar(x + off, [g.mean(key) for g in groups], w, yerr=[g.std(key) for g in groups], capsize=4, label=label)
    lo = min(g.mean(k) - g.std(k) for g in groups for k in ("val_acc", "test_acc"))
    ax1.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax1.set_xticks(x, [g.label for g in groups], rotation=20)
    ax1.set_ylabel("accuracy (mean ± std over seeds)")
    ax1.legend()
    ax1.grid(axis="y", alpha=0.3)
    ax2.bar(x, [g.mean("train_seconds") for g in groups], 0.6, yerr=[g.std("train_seconds") for g in groups],
            capsize=4, color="C2")
    ax2.set_xticks(x, [g.label for g in groups], rotation=20)
    ax2.set_ylabel("training seconds per run")
    ax2.grid(axis="y", alpha=0.3)
    return fig


def plot_validation_curves(groups: list[Group]) -> Figure:
    """Validation accuracy and loss per epoch, mean over seeds, one line per configuration."""
    fig = Figure(figsize=(12, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for i, g in enumerate(groups):
        n = min(len(r.history) for r in g.records)
        ep = np.arange(1, n + 1)
        for ax, key in zip(axes, ("val_acc", "val_loss")):
            v = np.array([[h[key] if h[key] is not None else np.nan for h in r.history[:n]] for r in g.records])
            ax.plot(ep, np.nanmean(v, 0), color=f"C{i}", label=g.label,
                    ls="-" if g.model == "improved" else "--")
    axes[0].set_ylabel("validation accuracy")
    axes[1].set_ylabel("validation cross-entropy")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig
