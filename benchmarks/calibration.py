"""Measured, not assumed: how often each paired method calls two configurations "distinguishable".

Simulates what a comparison gets - per seed, per image correctness of two configurations on the same
images - where the truth is known, and counts verdicts:

* null (a): images of varying difficulty (per-image probability of being right drawn from a U-shaped
  Beta, mean 0.85: most images are always right or always wrong), seeds independent given the image;
* null (b): the same plus a per-seed shift of the whole run's accuracy (on the logit scale, sized so the
  whole-run accuracy moves by SHIFT points sd), SHIFT estimated from this project's own records;
* power: side a better by 2, 3 or 5 points (its logits shifted), with the seed shift of null (b).

Methods: ``bootstrap`` (the old one: images and seeds resampled, 95% percentile interval), ``sign-flip``
(images only: random sign flips of the per-image differences), ``chosen`` (cifarlab.comparison's
paired_interval, what every verdict uses: image variance + variance of whole-run accuracy over seeds,
Satterthwaite t interval; exact McNemar with one seed a side). A false positive is "distinguishable" under a null.

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
from cifarlab.comparison import paired_interval, seed_variance  # noqa: E402

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


def simulate(rng, trials: int, seeds: int, images: int, gap: float, shift: float):
    """Correctness (trials, seeds, images) of a and b, a better by ``gap``, seed shifts of sd ``shift``."""
    p = np.clip(rng.beta(ACC * CONCENTRATION, (1 - ACC) * CONCENTRATION, (trials, 1, images)), 1e-6, 1 - 1e-6)
    z = np.log(p / (1 - p))
    sd = shift / SLOPE
    za, zb = (rng.normal(0, sd, (trials, seeds, 1)) for _ in range(2))
    a = rng.random((trials, seeds, images)) < _expit(z + logit_step(gap) + za) if gap else \
        rng.random((trials, seeds, images)) < _expit(z + za)
    b = rng.random((trials, seeds, images)) < _expit(z + zb)
    return a.astype(np.float32), b.astype(np.float32)


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
    names = ("bootstrap", "sign-flip", "chosen")
    rows, worst, power = [], {m: 0.0 for m in names}, {}
    print(f"{'setting':<22} {'seeds':>5} {'images':>6}  " + "  ".join(f"{m:>9}" for m in names))
    for setting, gap, sd in [("null (a)", 0, 0), ("null (b)", 0, shift)] + [(f"gap {g * 100:g} pts", g, shift)
                                                                            for g in gaps]:
        for s in seeds_grid:
            for n in images_grid:
                hits = {m: 0 for m in names}
                for done in range(0, args.trials, 250):
                    a, b = simulate(rng, min(250, args.trials - done), s, n, gap, sd)
                    hits["bootstrap"] += int(bootstrap(rng, a, b, args.boot).sum())
                    hits["sign-flip"] += int(sign_flip(rng, a, b, 400).sum())
                    hits["chosen"] += int(chosen(a, b).sum())
                rate = {m: hits[m] / args.trials for m in names}
                print(f"{setting:<22} {s:>5} {n:>6}  " + "  ".join(f"{rate[m] * 100:8.1f}%" for m in names), flush=True)
                rows.append((setting, s, n, rate))
                if not gap and s >= 2:
                    worst = {m: max(worst[m], rate[m]) for m in names}
                if gap == 0.03 and s == 2 and n == 300:
                    power = rate
    print(f"({time.perf_counter() - start:.0f} s; a rate under a null is the false-positive rate, nominal 5%; "
          f"under a gap, the power)")
    for m in names[:2]:
        print(f"{m}: worst false-positive rate {worst[m] * 100:.1f}% with >= 2 seeds, power at 3 points/300 images/"
              f"2 seeds {power[m] * 100:.0f}%")
    print(f"calibration: worst false-positive rate {worst['chosen'] * 100:.1f}% (nominal 5%), power at 3 points/"
          f"300 images/2 seeds {power['chosen'] * 100:.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
