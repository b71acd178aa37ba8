"""Comparing runs from their records: experiments, configurations, paired statistics, the choice.

What an experiment and a configuration are, how two configurations are paired image by image and how
the choice is made: docs/statistics.md. Dry-run records never enter a comparison; diverged runs are
listed, not averaged.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .classes import ClassSelectionError, select_classes
from .errors import CifarlabError
from .files import user_path
from .records import Record, find_records

CONFIDENCE = 0.95

PAIRED_METHOD = (
    "paired test on the same images: the difference is the mean over images of (a's accuracy over its seeds - "
    "b's); its uncertainty adds which images were drawn (image-to-image variance of the difference) and the "
    "seed-to-seed shift of whole-run accuracy beyond image noise (from the two configurations' seeds), in a "
    f"{CONFIDENCE:.0%} t interval (Satterthwaite degrees of freedom). With one seed a side seed noise cannot be "
    "estimated: then an exact McNemar interval on the images only one side gets right. Measured by "
    "benchmarks/calibration.py: two equally good configurations come out 'distinguishable' at most about 6% of "
    "the time with 2-5 seeds and 150-1000 images, with or without the seed shifts measured in this project "
    "(about 7% when one side's seeds shift twice as much as the other's).")

CHOICE_RULE = (
    "Within one experiment, choose the configuration with the highest mean validation accuracy over its "
    "seeds. Any other configuration whose difference from it on the same validation images is not "
    f"distinguishable (the {CONFIDENCE:.0%} interval of the paired difference includes 0) counts as "
    "tied, and among tied ones the fastest (mean training seconds; a +pretrained run's fine-tuning, not its "
    "backbone's) wins. From the chosen configuration, the "
    "seed with the highest validation accuracy is saved. The test set is reported, never used to choose.")


class ComparisonError(CifarlabError, ValueError):
    """The records cannot be compared as asked; the message says what was found and what to pass."""


def _value(record: Record, key: str) -> float:
    m = record.metrics
    if key == "mflops":
        v = None if m.get("flops") is None else m["flops"] / 1e6
    else:
        v = m.get("overfitting", {}).get(key, m.get(key))
    return float("nan") if v is None else float(v)


# --- experiments --------------------------------------------------------------------------------
@dataclass
class Experiment:
    """The records of one experiment (same classes and split)."""

    id: str
    name: str
    label: str
    records: list[Record]                                   # complete, not dry runs, each run once
    diverged: list[Record] = field(default_factory=list)
    copies: int = 0                                         # records of a run already counted

    @property
    def classes(self) -> tuple[int, ...]:
        return next(r.config.classes for r in self.records + self.diverged)

    def describe(self) -> str:
        d = f", {len(self.diverged)} diverged" if self.diverged else ""
        copies = f"; {self.copies} copies of those runs counted once" if self.copies else ""
        return f"{self.name}: {self.label} ({len(self.records)} complete runs{d}{copies})"


def _once(records: list[Record]) -> list[Record]:
    """A run copied into a second folder counts once: the folder named for it wins."""
    runs: dict[str, Record] = {}
    for r in records:
        if r.config.run_id not in runs or r.path.name == r.config.run_name:
            runs[r.config.run_id] = r
    return list(runs.values())


def experiments(records: list[Record]) -> tuple[list[Experiment], int]:
    """Records grouped by experiment (dry runs left out), and how many dry-run records were left out."""
    by_id: dict[str, Experiment] = {}
    dry = 0
    for r in records:
        if r.config.dry_run:
            dry += 1
            continue
        c = r.config
        e = by_id.setdefault(c.experiment_id, Experiment(c.experiment_id, c.experiment_name, c.experiment_label, []))
        (e.records if r.ok else e.diverged).append(r)
    for e in by_id.values():
        n, e.records = len(e.records), _once(e.records)
        e.copies = n - len(e.records)
    return sorted(by_id.values(), key=lambda e: e.name), dry


def select_experiment(found: list[Experiment], which=None, where="", skipped=()) -> Experiment:
    """The experiment named by ``which`` - only by what a user sees: its name, or its classes as
    ids/names/superclass - or the only one there is; else an error listing the candidates."""
    listing = "\n".join(f"  - {e.describe()}" for e in found)
    if not found:
        raise ComparisonError(f"no run records to compare{where} (dry runs never are): train some runs first "
                              f"(python -m cifarlab train --out RUNS; make run-all writes them to out/runs)"
                              + "".join(f"\n  not read: {s}" for s in skipped))
    if which is None or which == "" or which == []:
        if len(found) == 1:
            return found[0]
        raise ComparisonError(f"{len(found)} experiments found{where}; records of different experiments are never "
                              f"compared together. Choose one with --experiment NAME (notebook: EXPERIMENT = ...), "
                              f"by its name or its classes:\n{listing}")
    matches = [e for e in found if e.name == str(which)]
    if not matches:
        try:
            ids = select_classes(which).ids
        except ClassSelectionError:
            ids = None
        matches = [e for e in found if ids is not None and tuple(e.classes) == tuple(ids)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ComparisonError(f"no experiment matches {which!r}{where}; found:\n{listing}")
    raise ComparisonError(f"{which!r} matches {len(matches)} experiments{where} (same classes, different "
                          f"validation splits); pass one by name:\n"
                          + "\n".join(f"  - {e.describe()}" for e in matches))


# --- configurations -----------------------------------------------------------------------------
@dataclass
class Group:
    """All seeds of one configuration."""

    key: str                 # config_id
    records: list[Record]
    label: str = ""
    _correct: dict = field(default_factory=dict, repr=False)

    @property
    def model(self) -> str:
        """The net, as a comparison groups it: a pretrained one (``improved+pretrained``) is a net of its own."""
        return self.records[0].config.net_name

    @property
    def pooling(self) -> str:
        return self.records[0].config.pooling

    @property
    def n(self) -> int:
        return len(self.records)

    def values(self, key: str) -> np.ndarray:
        return np.array([_value(r, key) for r in self.records], dtype=float)

    def mean(self, key: str) -> float:
        v = self.values(key)
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    def std(self, key: str) -> float:
        v = self.values(key)
        return float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else 0.0

    def correct(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-seed, per-image correctness on ``split`` (seeds x images, bool) from the recorded predictions,
        and the labels of those images (read once per group and split)."""
        if split not in self._correct:
            preds = [r.predictions(split) for r in self.records]
            for r, p in zip(self.records[1:], preds[1:]):
                if not np.array_equal(p["true"], preds[0]["true"]):
                    raise ComparisonError(f"{r.path} was scored on other {split} images than "
                                          f"{self.records[0].path}: they cannot be paired. Retrain one with --force.")
            self._correct[split] = (np.array([p["pred"] == p["true"] for p in preds], dtype=bool), preds[0]["true"])
        return self._correct[split]


_ORDER = {"stride": 0, "max": 1, "avg": 2}


def group_records(records: list[Record], dry_runs: bool = False) -> list[Group]:
    """Complete records grouped by configuration (identity minus seed), improved net first, each labelled
    ``model/pooling`` plus what differs when several share model and pooling. Dry runs are left out unless
    ``dry_runs`` (a smoke test of a script that compares)."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in _once([r for r in records if r.ok and (dry_runs or not r.config.dry_run)]):
        groups[r.config.config_id].append(r)
    out = [Group(k, sorted(rs, key=lambda r: r.config.seed)) for k, rs in groups.items()]
    by_mp: dict[tuple, list[Group]] = defaultdict(list)
    for g in out:
        by_mp[(g.model, g.pooling)].append(g)
    for (model, pooling), gs in by_mp.items():
        idents = [{k: v for k, v in g.records[0].config.identity().items() if k != "seed"} for g in gs]
        differ = [k for k in idents[0] if len({repr(i[k]) for i in idents}) > 1]
        for g, ident in zip(gs, idents):
            what = ", ".join(f"{k.replace('_', ' ')} {ident[k]}" for k in differ)
            g.label = f"{model}/{pooling} ({what})" if what else f"{model}/{pooling}"
    return sorted(out, key=lambda g: (g.model != "improved", g.model == "template", g.model, _ORDER.get(g.pooling, 9),
                                      g.label))


# --- paired statistics --------------------------------------------------------------------------
@dataclass
class Paired:
    """The accuracy difference a - b on the same images, with its interval (:data:`PAIRED_METHOD`)."""

    diff: float
    lo: float
    hi: float
    a_only: float        # images a gets right and b wrong (mean over seed pairs)
    b_only: float
    n_images: int
    seeds: tuple[int, int]

    @property
    def distinguishable(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def interval(self) -> str:
        return f"{self.diff:+.4f} ({CONFIDENCE:.0%} interval {self.lo:+.4f} to {self.hi:+.4f})"


def seed_variance(x: np.ndarray) -> np.ndarray:
    """Seed-to-seed variance of whole-run accuracy beyond what image noise explains, from correctness
    ``x`` (seeds x images, or a batch of them): the variance of the per-seed accuracies minus the mean over
    images of each image's variance across seeds / images (a moment estimate: by chance below 0)."""
    x = np.asarray(x, dtype=float)
    return x.mean(-1).var(-1, ddof=1) - x.var(-2, ddof=1).mean(-1) / x.shape[-1]


def paired_interval(a: np.ndarray, b: np.ndarray):
    """diff, lo, hi of :func:`paired_difference` for a batch: ``a``, ``b`` are (batch, seeds, images)
    (benchmarks/calibration.py measures its error rates on thousands of simulated batches at once)."""
    from scipy import stats
    (sa, n), sb, tail = a.shape[1:], b.shape[1], (1 - CONFIDENCE) / 2
    d = a.mean(1) - b.mean(1)                                       # per image, mean over seeds
    diff = d.mean(1)
    if sa == sb == 1:   # exact (Clopper-Pearson) interval on a's share of the images only one side gets right
        k, m = (d > 0).sum(1), (d != 0).sum(1)
        lo = np.where(k > 0, stats.beta.ppf(tail, np.maximum(k, 1), m - k + 1), 0.0)
        hi = np.where(k < m, stats.beta.ppf(1 - tail, k + 1, np.maximum(m - k, 1)), 1.0)
        return diff, m / n * (2 * lo - 1), m / n * (2 * hi - 1)
    # Two parts, as in a Welch t (docs/statistics.md): the per-image differences' variance, and the seed shift
    # beyond it, known only roughly (2-5 seeds): Satterthwaite's degrees of freedom, the shift's precision taken
    # from the whole seed-to-seed variance (benchmarks/calibration.py measures what this keeps).
    sides = [(s - 1, x) for s, x in ((sa, a), (sb, b)) if s > 1]
    df_seed = sum(f for f, _ in sides)
    var = sum(f * seed_variance(x) for f, x in sides) / df_seed
    total = sum(f * x.mean(-1).var(-1, ddof=1) for f, x in sides) / df_seed
    k, v_img = 1 / sa + 1 / sb, d.var(1, ddof=1) / n
    v = v_img + np.maximum(var, 0) * k
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(v > 0, v ** 2 / (v_img ** 2 / (n - 1) + (total * k) ** 2 / df_seed), n - 1)
    half = stats.t.ppf(1 - tail, np.maximum(df, 1)) * np.sqrt(v)
    return diff, diff - half, diff + half


def paired_difference(a: np.ndarray, b: np.ndarray) -> Paired:
    """The difference mean accuracy(a) - mean accuracy(b) with its interval (:data:`PAIRED_METHOD`).
    ``a``, ``b``: per-seed, per-image correctness (seeds x images), the same images in the same order (as
    :func:`paired` checks)."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape[1] != b.shape[1]:
        raise ComparisonError(f"paired comparison needs the same images on both sides ({a.shape[1]} vs {b.shape[1]})")
    diff, lo, hi = (float(v[0]) for v in paired_interval(a[None], b[None]))
    pa, pb = a.mean(0), b.mean(0)
    return Paired(diff, lo, hi, float((pa * (1 - pb)).sum()), float((pb * (1 - pa)).sum()), a.shape[1],
                  (a.shape[0], b.shape[0]))


def paired(ga: Group, gb: Group, split: str) -> Paired:
    """:func:`paired_difference` of two configurations on ``split``, after checking they saw the same images."""
    (a, ya), (b, yb) = ga.correct(split), gb.correct(split)
    if not np.array_equal(ya, yb):
        raise ComparisonError(f"{ga.label} and {gb.label} were scored on different {split} images: they cannot "
                              f"be paired (records of one experiment should never differ here)")
    return paired_difference(a, b)


def verdict(ga: Group, gb: Group, split: str = "test") -> str:
    """The paired comparison of two configurations on ``split``, in a sentence a student can read."""
    p = paired(ga, gb, split)
    what = f"{ga.label} vs {gb.label}: {p.interval()} {split} accuracy"
    images = (f"of the {p.n_images} {split} images, only {ga.label} is right on {p.a_only:.1f}, "
              f"only {gb.label} on {p.b_only:.1f}" + (" (means over seed pairs)" if max(p.seeds) > 1 else ""))
    one_seed = (" With one seed a side the interval covers only which images were drawn, not seed-to-seed "
                "noise: train more seeds before trusting it." if min(p.seeds) == 1 else "")
    if p.distinguishable:
        return f"{what} - distinguishable: {images}.{one_seed}"
    if p.diff == 0 and p.a_only == 0 and p.b_only == 0:
        return f"{what} - identical predictions on every image."
    need = ((p.hi - p.lo) / 2 / abs(p.diff)) ** 2 if p.diff else math.inf   # half-width ~ 1/sqrt(images)
    if not math.isfinite(need):
        more = "there is no difference to separate"
    elif need < 2:
        more = f"it is at the edge: somewhat more {split} images (or seeds) could decide it"
    else:
        more = (f"if seed-to-seed noise is small, separating a difference this size would take about {need:.0f}x "
                f"as many {split} images")
    return f"{what} - NOT distinguishable: the interval includes 0 ({images}); {more}.{one_seed}"


def distinguishability(groups: list[Group], split: str = "test") -> str:
    """Per model, every pair of its configurations judged on paired data; every configuration of a student's
    own net against each shipped net's configuration with the same pooling (its own pooling: that net's best on
    validation); every pretrained one against the same net from scratch."""
    pairs = []
    for model in dict.fromkeys(g.model for g in groups):
        gs = [g for g in groups if g.model == model]
        pairs += [(gs[i], gs[j]) for i in range(len(gs)) for j in range(i + 1, len(gs))]
    shipped = [g for g in groups if not g.records[0].config.net]
    for own in (g for g in groups if g.records[0].config.net):
        for model in dict.fromkeys(g.model for g in shipped):
            gs = [g for g in shipped if g.model == model]
            pairs.append((own, next((g for g in gs if g.pooling == own.pooling), None)
                          or max(gs, key=lambda g: g.mean("val_acc"))))
    pairs += [(pre, scratch) for pre in groups if pre.records[0].config.pretrain_epochs for scratch in groups
              if scratch.model == pre.records[0].config.model and scratch.pooling == pre.pooling]   # same net
    lines = []
    for a, b in pairs:
        a, b = (a, b) if a.mean(f"{split}_acc") >= b.mean(f"{split}_acc") else (b, a)
        lines.append(verdict(a, b, split))
    if not lines:
        return "Only one configuration per model: nothing to distinguish."
    # the noise that more images cannot remove, only more seeds (:func:`seed_variance`)
    sd = [f"{g.label} {math.sqrt(max(float(seed_variance(g.correct(split)[0])), 0)) * 100:.1f}"
          for g in groups if g.n > 1]
    if not sd:
        return "\n".join(lines + ["Seed-to-seed shift: not measurable with one seed per configuration."])
    return "\n".join(lines + [f"Seed-to-seed shift of whole-run {split} accuracy beyond image noise (sd in points; "
                              f"0 = within image noise; from only 2-3 seeds it is rough): " + ", ".join(sd) + "."])


# --- the choice -----------------------------------------------------------------------------------
@dataclass
class Choice:
    group: Group
    record: Record            # the seed that is saved
    tied: list[Group]         # groups not distinguishable from the best on validation (incl. the best)
    explanation: str


def choose(groups: list[Group]) -> Choice:
    """Apply :data:`CHOICE_RULE` to the configurations of one experiment."""
    if not all(r.metrics.get("n_val") for g in groups for r in g.records):
        raise ComparisonError("these runs have no validation split (val_fraction 0): the choice rule needs "
                              "validation accuracy, and the test set never chooses. The comparison still reports "
                              "them (python -m cifarlab compare without --best); to choose, train with a "
                              "validation split (val_fraction > 0, default 0.1).")
    best = max(groups, key=lambda g: (g.mean("val_acc"), -g.mean("train_seconds")))
    tied, notes = [best], []
    for g in groups:
        if g is best:
            continue
        p = paired(g, best, "val")
        notes.append(f"{g.label} {p.interval()}: " + ("lower" if p.distinguishable else "tied"))
        if not p.distinguishable:
            tied.append(g)
    why = (f"{best.label} is the only configuration compared, so it is chosen." if not notes else
           f"{best.label} has the highest mean validation accuracy ({best.mean('val_acc'):.4f} over "
           f"{best.n} seed{'s' if best.n > 1 else ''}). Paired on the same {best.records[0].metrics['n_val']} "
           f"validation images, the others differ by: {'; '.join(notes)}.")
    winner = min(tied, key=lambda g: (g.mean("train_seconds"), g is not best))
    if len(tied) > 1:
        why += (f" Among the tied ({', '.join(g.label for g in tied)}) the fastest wins: {winner.label} "
                f"({winner.mean('train_seconds'):.1f} s per run). (Tied means not shown to differ on these "
                f"validation images; a small validation split ties close calls, so speed decides them.)")
    elif len(groups) > 1:
        why += f" None is tied with it, so {winner.label} wins."
    record = max(winner.records, key=lambda r: (_value(r, "val_acc"), -r.config.seed))
    why += f" Saved: seed {record.config.seed} (validation accuracy {_value(record, 'val_acc'):.4f})."
    return Choice(winner, record, tied, why)


# --- tables ---------------------------------------------------------------------------------------
QUALITY = (("test_acc", "test acc", 4), ("test_macro_f1", "test F1", 4), ("val_acc", "val acc", 4),
           ("train_acc", "train acc", 4))
COST = (("train_seconds", "train s", 1), ("acc_gap", "acc gap", 4), ("loss_gap", "loss gap", 3),
        ("val_loss_rise", "val-loss rise", 3))
TRADEOFFS = (("test_acc", "test acc", 4), ("shift_consistency", "shift consist.", 4), ("train_seconds", "train s", 1),
             ("latency_ms_b1", "ms/image", 3), ("mflops", "MFLOPs", 2))
# what "wins" means per trade-off column: higher or lower is better, and how to say it
_WINS = {"test_acc": (max, "the highest test accuracy"), "shift_consistency": (max, "the most shift-consistent"),
         "train_seconds": (min, "the fastest to train"), "latency_ms_b1": (min, "the fastest at inference"),
         "mflops": (min, "the fewest FLOPs")}


def _winners(gs: list[Group], key: str) -> list[Group]:
    """The configurations best on ``key`` among ``gs`` (all of them when tied); none when one lacks the measure."""
    means = [g.mean(key) for g in gs]
    if not all(math.isfinite(m) for m in means):
        return []
    best = _WINS[key][0](means)
    return [g for g, m in zip(gs, means) if m == best]


def _pm(mean: float, std: float, n: int, digits: int) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def table(groups: list[Group], columns=QUALITY) -> str:
    """A text table: one row per configuration, mean ± std over seeds of each column."""
    head = ["config", "seeds"] + [name for _, name, _ in columns]
    body = [[g.label, str(g.n)] + [_pm(g.mean(k), g.std(k), g.n, d) for k, _, d in columns] for g in groups]
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in body])


# --- one comparison, start to finish --------------------------------------------------------------
@dataclass
class Comparison:
    """One experiment's comparison: its configurations, the choice and the paired verdicts."""

    runs: Path
    experiment: Experiment
    others: list[Experiment]
    dry_runs: int
    groups: list[Group]
    choice: Choice | None
    no_choice: str | None
    verdicts: str
    saved: dict | None = None     # the ONNX check of best/, when compare_and_save saved it
    skipped: list = field(default_factory=list)   # records in the folder not read (incomplete, damaged, links)

    def summary(self) -> str:
        """Which experiment, and what was left out of it."""
        lines = [f"Experiment {self.experiment.describe()}"]
        if self.others:
            lines.append("Other experiments in this runs folder (not compared here): "
                         + "; ".join(e.name for e in self.others))
        if self.dry_runs:
            lines.append(f"({self.dry_runs} dry-run record{'s' if self.dry_runs > 1 else ''} ignored)")
        lines += [f"diverged, not compared: {r.config.title} - {r.path}" for r in self.experiment.diverged]
        lines += [f"not read: {s}" for s in self.skipped]
        return "\n".join(lines)

    def tables(self) -> str:
        return "\n".join(["Quality (mean ± std over seeds):", table(self.groups, QUALITY), "",
                          "Cost and overfitting (train s = training seconds per run):", table(self.groups, COST)])

    def tradeoffs(self) -> str:
        """The trade-offs table, where each configuration wins among its net's, and whether another tactic of
        the chosen net would win on robustness or cost (docs/statistics.md, "What else the tactics change")."""
        lines = ["Trade-offs (mean ± std over seeds; shift consistency: same class under two random shifts of "
                 "up to 4 pixels; ms/image: ONNX in onnxruntime, batch 1, on "
                 f"{self.groups[0].records[0].metrics.get('latency_machine', 'this CPU')}):",
                 table(self.groups, TRADEOFFS), ""]
        for model in dict.fromkeys(g.model for g in self.groups):
            gs = [g for g in self.groups if g.model == model]
            if len(gs) < 2:
                continue
            wins = {key: _winners(gs, key) for key in _WINS}
            for g in gs:
                said = [what for key, (_, what) in _WINS.items() if g in wins[key]]
                lines.append(f"{g.label}: " + (", ".join(said) if said else "wins on none of these") + ".")
        if self.choice is not None:
            chosen, notes = self.choice.group, []
            for key, what, fmt in (("shift_consistency", "shift consistency", "{:.4f}"),
                                   ("latency_ms_b1", "inference latency", "{:.3f} ms"),
                                   ("mflops", "FLOPs", "{:.1f} M")):
                best = _winners([g for g in self.groups if g.model == chosen.model], key)
                if best and chosen not in best:
                    notes.append(f"on {what}, {best[0].label} would win ({fmt.format(best[0].mean(key))} vs "
                                 f"{fmt.format(chosen.mean(key))})")
            lines += ["", (f"The rule chooses on validation accuracy ({chosen.label}); among its net's tactics, "
                           f"{'; '.join(notes)}. Pick by what your use needs." if notes else
                           f"{chosen.label}, chosen on validation accuracy, also wins on shift consistency and cost.")]
        return "\n".join(lines)

    def decision(self) -> str:
        """The rule, the choice, and the paired verdicts, in words."""
        return "\n".join(["Rule: " + CHOICE_RULE, "",
                          "Choice: " + (self.choice.explanation if self.choice else self.no_choice), "",
                          "Are the configurations distinguishable on the test set? (" + PAIRED_METHOD + ")",
                          self.verdicts])

    def save(self, best, data_dir=None) -> dict:
        """Save the chosen run to ``best`` (state_dict, ONNX checked against PyTorch, ``selection.json``)."""
        from .data import data_source, subset_for
        from .export import save_best
        if self.choice is None:
            raise ComparisonError(f"nothing saved to {best}: {self.no_choice}")
        rec = self.choice.record
        # real test images for the ONNX check when they are at hand; never a download just for 8 images
        images = (subset_for(rec.config, data_dir, verbose=False).x_test[:8]
                  if data_source(rec.config.classes, data_dir) != "download" else None)
        selection = {"experiment": self.experiment.label, "experiment_name": self.experiment.name,
                     "experiment_id": self.experiment.id, "rule": CHOICE_RULE, "explanation": self.choice.explanation,
                     "paired_method": PAIRED_METHOD, "distinguishable": self.verdicts,
                     "configurations": {g.label: [str(r.path) for r in g.records] for g in self.groups},
                     "run_id": rec.config.run_id}
        self.saved = {**save_best(rec, best, selection, images), "folder": str(best)}
        return self.saved

    def report(self) -> str:
        """Everything a person reads, as text (the CLI prints it; the notebook shows it in parts)."""
        return "\n\n".join([self.summary(), self.tables(), self.tradeoffs(), self.decision()])


def compare(runs, experiment=None, records=None) -> Comparison:
    """Compare the records of one experiment under ``runs`` (``experiment``: its name or classes; needed
    only when the folder holds several). ``records``: ``find_records(runs)`` when the caller has it already
    (one experiment after another from the same folder)."""
    records = find_records(runs) if records is None else records
    runs, skipped = user_path(runs, "--runs"), getattr(records, "skipped", [])
    found, dry = experiments(records)
    exp = select_experiment(found, experiment, f" in {runs}", skipped)
    groups = group_records(exp.records)
    if not groups:
        raise ComparisonError(f"experiment {exp.name} in {runs} has no complete runs to compare "
                              f"({len(exp.diverged)} diverged): "
                              f"train its runs (a diverged one with a lower learning rate)")
    choice, no_choice = None, None
    try:
        choice = choose(groups)
    except ComparisonError as e:
        no_choice = str(e)
    return Comparison(runs, exp, [e for e in found if e is not exp], dry, groups, choice, no_choice,
                      distinguishability(groups), skipped=skipped)


def compare_and_save(runs, best=None, experiment=None, data_dir=None) -> Comparison:
    """Compare, choose, and save the chosen run to ``best`` (``python -m cifarlab compare [--best]``; notebook
    02 does the two steps in cells of their own). ``best`` is checked before anything else."""
    from .export import check_best_target

    if best is not None:
        best = check_best_target(best)   # expanded: the folder used and named
    c = compare(runs, experiment)
    if best is not None:
        c.save(best, data_dir)
    return c
