"""Measured, not assumed: how often each paired method calls two configurations "distinguishable".

Simulates what a comparison gets - per seed, per image correctness of two configurations on the same
images - where the truth is known, and counts verdicts:

* null (a): images of varying difficulty (per-image probability of being right drawn from a U-shaped
  Beta, mean 0.85: most images are always right or always wrong), seeds independent given the image;
* null (b): the same plus a per-seed shift of the whole run's accuracy (on the logit scale, sized so the
  whole-run accuracy moves by SHIFT points sd), SHIFT estimated from this project's own records;
* null (c): as (b), but one tactic's seeds shift twice as much (a and its other subsets: 2 x SHIFT);
* null (d): as (b), but one configuration's seeds shift twice as much (a only, not its other subsets);
* power: side a better by 2, 3 or 5 points (its logits shifted), with the seed shift of null (b).

Methods: ``bootstrap`` (cifarlab 0.2: images and seeds resampled, 95% percentile interval), ``sign-flip``
(images only: random sign flips of the per-image differences), ``previous`` (the wider of two Satterthwaite
t intervals, the pair's own seeds), ``chosen`` (cifarlab.comparison.paired_interval, what every verdict of
one experiment uses: image variance + seed shift beyond image noise from the pair's own seeds, Satterthwaite
t interval; exact McNemar with one seed a side), ``pooled`` (the same with the seed shift pooled over 10
subsets of each of the two tactics, as across subsets: cifarlab.subsets). A false positive is
"distinguishable" under a null.

    python benchmarks/calibration.py [--trials 1000] [--runs RUNS]   # RUNS: size SHIFT from those records
    python benchmarks/calibration.py --quick                          # a smaller grid, for the test suite
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cifarlab.comparison import CONFIDENCE, paired_interval, seed_variance  # noqa: E402

ACC, CONCENTRATION = 0.85, 1.0          # Beta(0.85, 0.15): U-shaped per-image difficulty
_P = np.clip(np.random.default_rng(99).beta(ACC * CONCENTRATION, (1 - ACC) * CONCENTRATION, 400_000), 1e-6, 1 - 1e-6)
_LOGIT = np.log(_P / (1 - _P))
_expit = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731


def logit_step(gap: float) -> float:
    """The logit shift that raises mean accuracy by ``gap`` (bisection on a large sample of images)."""
    lo, hi = -10.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _expit(_LOGIT + mid).mean() - _P.mean() < gap else (lo, mid)
    return (lo + hi) / 2


SLOPE = float((_P * (1 - _P)).mean())   # d accuracy / d logit shift, near 0: seed shift sd -> logit sd


def simulate(rng, trials: int, seeds: int, images: int, gap: float, shift: float, mult=(1, 1)):
    """Correctness (trials, seeds, images) of a and b, a better by ``gap``, seed shifts of sd ``shift`` times
    ``mult`` (a's, b's)."""
    p = np.clip(rng.beta(ACC * CONCENTRATION, (1 - ACC) * CONCENTRATION, (trials, 1, images)), 1e-6, 1 - 1e-6)
    z = np.log(p / (1 - p))
    za, zb = (rng.normal(0, m * shift / SLOPE, (trials, seeds, 1)) for m in mult)
    a = rng.random((trials, seeds, images)) < _expit(z + logit_step(gap) + za) if gap else \
        rng.random((trials, seeds, images)) < _expit(z + za)
    b = rng.random((trials, seeds, images)) < _expit(z + zb)
    return a.astype(np.float32), b.astype(np.float32)


SUBSETS, POOL_IMAGES = 10, 300


def seed_shift(xs) -> tuple:
    """The seed shift pooled over configurations (correctness arrays (batch, seeds, images), 2+ seeds): the
    variance of whole-run accuracy over seeds beyond image noise and whole, weighted by seeds - 1, and its
    degrees of freedom."""
    df = sum(x.shape[1] - 1 for x in xs)
    return (sum((x.shape[1] - 1) * seed_variance(x) for x in xs) / df,
            sum((x.shape[1] - 1) * x.mean(-1).var(-1, ddof=1) for x in xs) / df, df)


def pooled(rng, a, b, shift: float, mult=(1, 1)) -> np.ndarray:
    """Across subsets: the seed shift pooled over a and b and each tactic's runs on SUBSETS - 1 other subsets
    (their own POOL_IMAGES images, seed shifts of sd ``shift`` times ``mult``); True where the interval
    excludes 0."""
    trials, seeds = a.shape[:2]
    others = [x for m in mult for _ in range(SUBSETS - 1)
              for x in simulate(rng, trials, seeds, POOL_IMAGES, 0, shift, (m, m))[:1]]
    return shifted(a, b, seed_shift([a, b] + others))


def shifted(a, b, shift) -> np.ndarray:
    """cifarlab.comparison.paired_interval with a given seed shift (:func:`seed_shift`) in place of the one from
    the pair's own seeds (2+ seeds a side; rejected for the library, see calibration_results.md); True where
    the interval excludes 0."""
    from scipy import stats
    (sa, n), sb = a.shape[1:], b.shape[1]
    d = a.mean(1) - b.mean(1)
    diff = d.mean(1)
    (var, total, df_seed), k, v_img = shift, 1 / sa + 1 / sb, d.var(1, ddof=1) / n
    v = v_img + np.maximum(var, 0) * k
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(v > 0, v ** 2 / (v_img ** 2 / (n - 1) + (total * k) ** 2 / df_seed), n - 1)
    half = stats.t.ppf(1 - (1 - CONFIDENCE) / 2, np.maximum(df, 1)) * np.sqrt(v)
    return (diff - half > 0) | (diff + half < 0)


def previous(a, b) -> np.ndarray:
    """The method this one replaced: the wider of two Satterthwaite t intervals, (1) the image variance less
    the within-image seed coin flips plus the variance of whole-run accuracy over seeds, (2) the whole image
    variance plus only the seed shift beyond image noise; True where it excludes 0."""
    from scipy import stats
    (sa, n), sb = a.shape[1:], b.shape[1]
    if sa == sb == 1:
        return chosen(a, b)
    d = a.mean(1) - b.mean(1)
    diff = d.mean(1)
    sides = [(s - 1, x.mean(-1).var(-1, ddof=1), x.var(-2, ddof=1).mean(-1) / n) for s, x in ((sa, a), (sb, b))]
    df_seed = sum(f for f, _, _ in sides)
    s2, e2 = (sum(f * v[i] for f, *v in sides) / df_seed for i in (0, 1))
    k, v_img = 1 / sa + 1 / sb, d.var(1, ddof=1) / n
    half = 0
    for v_images, v_seeds, v_df in ((np.maximum(v_img - e2 * k, 0), s2 * k, s2 * k),
                                    (v_img, np.maximum(s2 - e2, 0) * k, (np.maximum(s2 - e2, 0) + s2) * k / 2)):
        v = v_images + v_seeds
        with np.errstate(invalid="ignore", divide="ignore"):
            df = np.where(v > 0, v ** 2 / (v_images ** 2 / (n - 1) + v_df ** 2 / df_seed), n - 1)
        half = np.maximum(half, stats.t.ppf(0.975, np.maximum(df, 1)) * np.sqrt(v))
    return (diff - half > 0) | (diff + half < 0)


def bootstrap(rng, a, b, n_boot: int) -> np.ndarray:
    """The old method (cifarlab 0.2's paired_difference): images resampled (the same draw for both) and
    each side's seeds, percentile interval; True where it excludes 0."""
    t, s, n = a.shape
    w = rng.multinomial(n, np.full(n, 1 / n), size=n_boot).astype(np.float32)     # (boot, images)
    acc = []
    for x in (a, b):
        c = rng.multinomial(s, np.full(s, 1 / s), size=n_boot).astype(np.float32)  # (boot, seeds)
        xw = (x.reshape(t * s, n) @ w.T).reshape(t, s, n_boot)
        acc.append((xw * c.T[None]).sum(1) / (s * n))
    lo, hi = np.quantile(acc[0] - acc[1], [0.025, 0.975], axis=1)
    return (lo > 0) | (hi < 0)


def sign_flip(rng, a, b, flips: int) -> np.ndarray:
    """Images only: per-image differences (mean over seeds) with random signs, two-sided p < 0.05."""
    d = a.mean(1) - b.mean(1)
    signs = rng.choice(np.array([-1, 1], np.float32), size=(flips, d.shape[1]))
    obs = np.abs(d.mean(1))
    null = np.abs(d @ signs.T) / d.shape[1]
    return (1 + (null >= obs[:, None] - 1e-9).sum(1)) / (flips + 1) < 0.05


def chosen(a, b) -> np.ndarray:
    _, lo, hi = paired_interval(a, b)
    return (lo > 0) | (hi < 0)


def shift_from_records(runs=None) -> tuple[float, str]:
    """The seed shift to simulate, from records: with RUNS (predictions recorded) the variance of whole-run
    accuracy beyond image noise, pooled over configurations; without, an upper bound from
    accuracy_results.jsonl (whole-run sd over seeds, image noise included, as no per-image data is there)."""
    if runs:
        from cifarlab.comparison import group_records
        from cifarlab.records import find_records
        records = [r for folder in runs for r in find_records(folder)]
        est = [(g.n - 1, float(seed_variance(g.correct("test")[0]))) for g in group_records(records) if g.n > 1]
        v = sum(f * e for f, e in est) / sum(f for f, _ in est)
        return float(np.sqrt(max(v, 0))), f"{len(est)} configurations in {', '.join(runs)}, beyond image noise"
    groups: dict = {}
    for line in (Path(__file__).parent / "accuracy_results.jsonl").read_text().splitlines():
        r = json.loads(line)
        key = (r["model"], r["pooling"], tuple(r["classes"]), r["epochs"], r.get("hidden_size"))
        groups.setdefault(key, []).append(r["test_acc"])
    est = [(len(v) - 1, np.var(v, ddof=1)) for v in groups.values() if len(v) > 1]
    v = sum(f * e for f, e in est) / sum(f for f, _ in est)
    return float(np.sqrt(v)), f"{len(est)} configurations in accuracy_results.jsonl, image noise included (upper bound)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--boot", type=int, default=400, help="bootstrap draws of the old method")
    ap.add_argument("--runs", nargs="+", help="runs folders with 2+ seeds per configuration: size the seed shift")
    ap.add_argument("--shift", type=float, help="seed shift sd (accuracy points / 100) instead of estimating it")
    ap.add_argument("--quick", action="store_true", help="2 seeds, 300 images, nulls and 3 points only")
    args = ap.parse_args(argv)
    shift, source = (args.shift, "given") if args.shift is not None else shift_from_records(args.runs)
    seeds_grid, images_grid, gaps = ((2,), (300,), (0.03,)) if args.quick else ((1, 2, 3, 5), (150, 300, 1000),
                                                                                (0.02, 0.03, 0.05))
    print(f"seed shift simulated in null (b) and power: sd {shift * 100:.2f} points ({source}); "
          f"{args.trials} trials per setting; per-image difficulty Beta({ACC:g}, {1 - ACC:.2g})")
    rng, start = np.random.default_rng(0), time.perf_counter()
    names = ("bootstrap", "sign-flip", "previous", "chosen", "pooled")
    rows, worst, worst_cd, power = [], {m: 0.0 for m in names}, {m: 0.0 for m in names}, {}
    print(f"{'setting':<22} {'seeds':>5} {'images':>6}  " + "  ".join(f"{m:>9}" for m in names))
    nulls = [("null (a)", 0, 0, (1, 1)), ("null (b)", 0, shift, (1, 1)), ("null (c) tactic 2x", 0, shift, (2, 1)),
             ("null (d) config 2x", 0, shift, (2, 1))]
    for setting, gap, sd, mult in nulls + [(f"gap {g * 100:g} pts", g, shift, (1, 1)) for g in gaps]:
        for s in seeds_grid:
            for n in images_grid:
                hits = {m: 0 for m in names}
                for done in range(0, args.trials, 250):
                    a, b = simulate(rng, min(250, args.trials - done), s, n, gap, sd, mult)
                    hits["bootstrap"] += int(bootstrap(rng, a, b, args.boot).sum())
                    hits["sign-flip"] += int(sign_flip(rng, a, b, 400).sum())
                    hits["previous"] += int(previous(a, b).sum())
                    hits["chosen"] += int(chosen(a, b).sum())
                    # null (d): only a shifts 2x, its other subsets as every other configuration
                    hits["pooled"] += int(pooled(rng, a, b, sd, (1, 1) if "(d)" in setting else mult).sum()
                                          if s > 1 else chosen(a, b).sum())
                rate = {m: hits[m] / args.trials for m in names}
                print(f"{setting:<22} {s:>5} {n:>6}  " + "  ".join(f"{rate[m] * 100:8.1f}%" for m in names), flush=True)
                rows.append((setting, s, n, rate))
                if not gap and s >= 2:   # the nulls (a) and (b); the robustness nulls (c) and (d) apart
                    w = worst_cd if "(c)" in setting or "(d)" in setting else worst
                    w.update({m: max(w[m], rate[m]) for m in names})
                if gap == 0.03 and s == 2 and n == 300:
                    power = rate
    print(f"({time.perf_counter() - start:.0f} s; a rate under a null is the false-positive rate, nominal 5%; "
          f"under a gap, the power)")
    for m in names:
        if m != "chosen":
            print(f"{m}: worst false-positive rate {worst[m] * 100:.1f}% with >= 2 seeds, power at 3 points/300 "
                  f"images/2 seeds {power[m] * 100:.0f}%")
    print("worst false-positive rate with >= 2 seeds under nulls (c) and (d), one tactic or configuration shifting 2x: "
          + ", ".join(f"{m} {worst_cd[m] * 100:.1f}%" for m in names))
    print(f"calibration: worst false-positive rate {worst['chosen'] * 100:.1f}% (nominal 5%), power at 3 points/"
          f"300 images/2 seeds {power['chosen'] * 100:.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
