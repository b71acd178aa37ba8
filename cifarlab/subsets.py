"""Across class subsets: is a pooling tactic better in general, or only on the classes one student picked?

A sweep's subsets (experiments) are treated as a sample of the subsets a student might pick: per net and
pair of tactics, the paired difference per subset and a random-effects pooled difference whose interval is
about subsets in general (the method: docs/statistics.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .comparison import CONFIDENCE, ComparisonError, Group, experiments, group_records, paired
from .records import find_records

MEASURES = {"test_acc": ("test accuracy", 4), "shift_consistency": ("shift consistency", 4),
            "train_seconds": ("training seconds", 1)}


@dataclass
class Pooled:
    est: float
    lo: float
    hi: float
    tau: float          # between-subset sd of the true differences
    k: int              # subsets pooled


def pool(y, se) -> Pooled:
    """Random-effects pooled mean of per-subset differences ``y`` with standard errors ``se``."""
    from scipy import stats
    y, v = np.asarray(y, float), np.maximum(np.asarray(se, float) ** 2, 1e-12)
    k, w = len(y), 1 / v
    fixed = (w * y).sum() / w.sum()
    q = (w * (y - fixed) ** 2).sum()
    tau2 = max(0.0, (q - (k - 1)) / (w.sum() - (w ** 2).sum() / w.sum()))
    ws = 1 / (v + tau2)
    est = float((ws * y).sum() / ws.sum())
    # Hartung-Knapp's standard error, never below DerSimonian-Laird's (subsets that agree exactly still differ)
    se = max(math.sqrt((ws * (y - est) ** 2).sum() / ((k - 1) * ws.sum())), math.sqrt(1 / ws.sum()))
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, k - 1)) * se
    return Pooled(est, est - half, est + half, math.sqrt(tau2), k)


@dataclass
class PairAcross:
    """One net, two tactics, one measure: the difference a - b per subset and pooled."""

    model: str
    a: str
    b: str
    measure: str
    rows: list[tuple[str, float, float, float]]          # (subset, diff, lo, hi)
    missing: list[str] = field(default_factory=list)     # subsets without a or b: left out of this pair
    pooled: Pooled | None = None

    @property
    def title(self) -> str:
        return f"{self.model}: {self.a} - {self.b}, {MEASURES[self.measure][0]}"

    def summary(self) -> str:
        digits = MEASURES[self.measure][1]
        wins_a, wins_b = sum(d > 0 for _, d, _, _ in self.rows), sum(d < 0 for _, d, _, _ in self.rows)
        sep_a, sep_b = sum(lo > 0 for *_, lo, _ in self.rows), sum(hi < 0 for *_, hi in self.rows)
        line = (f"{self.title}: {self.a} higher in {wins_a} of {len(self.rows)} subsets ({sep_a} distinguishable), "
                f"{self.b} higher in {wins_b} ({sep_b} distinguishable)")
        p = self.pooled
        if p:
            sign = ("so in general " + (self.a if p.lo > 0 else self.b) + " is higher" if p.lo > 0 or p.hi < 0
                    else "not distinguishable from 0 across subsets")
            line += (f"; pooled {p.est:+.{digits}f} ({CONFIDENCE:.0%} interval {p.lo:+.{digits}f} to "
                     f"{p.hi:+.{digits}f}, between-subset sd {p.tau:.{digits}f}): {sign}")
        if self.missing:
            line += f". Left out (a tactic missing): {', '.join(self.missing)}"
        return line + "."


def _difference(ga: Group, gb: Group, measure: str):
    if measure == "test_acc":
        p = paired(ga, gb, "test")
        return p.diff, p.lo, p.hi
    d = ga.mean(measure) - gb.mean(measure)
    if not math.isfinite(d):       # a side without the measure (records older than it)
        return None
    half = 1.96 * math.sqrt(ga.std(measure) ** 2 / ga.n + gb.std(measure) ** 2 / gb.n)
    return d, d - half, d + half


@dataclass
class Across:
    """A sweep's experiments, answered per net and pair of tactics."""

    groups: dict                      # subset -> its configurations (comparison.Group)
    pairs: list[PairAcross]

    def table(self, model: str) -> str:
        """Test accuracy per subset and tactic (mean over seeds) for one net."""
        tactics = list(dict.fromkeys(t for p in self.pairs if p.model == model for t in (p.a, p.b)))
        width = max(len(s) for s in self.groups)
        lines = [f"{'subset':<{width}}  " + "  ".join(f"{t:>7}" for t in tactics)]
        for s in self.groups:
            accs = {g.pooling: g.mean("test_acc") for g in self.groups[s] if g.model == model}
            lines.append(f"{s:<{width}}  " + "  ".join(f"{accs[t]:7.4f}" if t in accs else f"{'-':>7}"
                                                       for t in tactics))
        return "\n".join(lines)

    def report(self) -> str:
        """Per net: the accuracy table, every pair on every measure, and the answer."""
        out = []
        for model in dict.fromkeys(p.model for p in self.pairs):
            out += [f"Test accuracy per subset, {model} net (mean over seeds):", self.table(model), ""]
            out += [p.summary() for p in self.pairs if p.model == model] + ["", self.answer(model), ""]
        return "\n".join(out).rstrip()

    def forest_plots(self, measure: str = "test_acc") -> list:
        """A forest plot per net and pair of tactics: one row per subset, the pooled estimate at the bottom."""
        from .figures import forest_plot
        return [forest_plot(p.rows, p.pooled, p.title, f"difference {p.a} - {p.b} ({CONFIDENCE:.0%} interval)")
                for p in self.pairs if p.measure == measure and p.rows]

    def answer(self, model: str) -> str:
        """Which tactic, if any, beats every other tactic of ``model`` across subsets (pooled interval > 0)."""
        acc = [p for p in self.pairs if p.model == model and p.measure == "test_acc" and p.pooled]
        tactics = dict.fromkeys(t for p in acc for t in (p.a, p.b))
        for t in tactics:
            beats = [(p.pooled.est if p.a == t else -p.pooled.est) for p in acc if t in (p.a, p.b)
                     and ((p.a == t and p.pooled.lo > 0) or (p.b == t and p.pooled.hi < 0))]
            if beats and len(beats) == len(tactics) - 1:
                return (f"{model}: {t} is the best tactic in general on these subsets, by "
                        + " and ".join(f"{b * 100:.1f}" for b in beats) + " points of test accuracy (pooled).")
        return f"{model}: no tactic beats all the others across these subsets (pooled intervals include 0)."


def across_subsets(runs, records=None) -> Across:
    """Every net and pair of tactics over the experiments in ``runs`` (a sweep's folder)."""
    records = find_records(runs) if records is None else records
    found, _ = experiments(records)
    if len(found) < 2:
        raise ComparisonError(
            f"across subsets needs several experiments (class subsets) in {runs}; found {len(found)}"
            + (f" ({found[0].name})" if found else "") + ". Train the same tactics on several subsets with a "
            f"sweep, e.g.: python -m cifarlab sweep --classes fish --classes flowers --classes insects "
            f"--classes vehicles_1 --classes people --models improved --seeds 2 --out {runs}")
    groups = {e.name: group_records(e.records) for e in found}
    pairs = []
    for model in dict.fromkeys(g.model for gs in groups.values() for g in gs):
        tactics = [t for t in ("stride", "max", "avg") if any(g.model == model and g.pooling == t
                                                              for gs in groups.values() for g in gs)]
        for i, a in enumerate(tactics):
            for b in tactics[i + 1:]:
                for measure in MEASURES:
                    pair = PairAcross(model, a, b, measure, [])
                    for name, gs in groups.items():
                        ga, gb = (next((g for g in gs if g.model == model and g.pooling == t), None) for t in (a, b))
                        d = _difference(ga, gb, measure) if ga and gb else None
                        if d is None:
                            pair.missing.append(name)
                        else:
                            pair.rows.append((name, *d))
                    if len(pair.rows) >= 2:
                        y = [r[1] for r in pair.rows]
                        se = [(r[3] - r[2]) / (2 * 1.96) for r in pair.rows]
                        pair.pooled = pool(y, se)
                    pairs.append(pair)
    return Across(groups, pairs)
