"""Precision: the improved preset in fp32 and in bf16 autocast, same subsets, same seeds - is it faster,
and does accuracy move?

    python benchmarks/precision.py --subsets "0,55,58;vehicles_1;dolphin,shark,whale" --seeds 3 \
        --data-dir /path/with/cifar-100-python --out precision-runs

For each subset and seed, one run per precision (records under ``--out``: a rerun reuses them). Accuracy
is compared on paired data - the same test images score both precisions - with the library's paired
bootstrap over images and seeds (cifarlab.comparison.paired). Speed is training seconds per
epoch (a warm-up run first, so no run pays the first-call costs). The last line:

  bf16 vs fp32, improved preset (<pooling>): <r>x per epoch; test accuracy within noise on <k> of <n> subsets
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from machine import device_summary

from cifarlab.comparison import group_records, paired
from cifarlab.config import make_config
from cifarlab.data import load_subset
from cifarlab.engine import train
from cifarlab.experiment import run
from cifarlab.hardware import pick_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subsets", default="0,55,58", help="class subsets separated by ';'")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pooling", default="max")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None, help="keep the records here (default: a temporary folder)")
    ap.add_argument("--dry-run", action="store_true", help="two training steps per run: checks the script")
    args = ap.parse_args()

    device = pick_device(args.device)
    print(f"device {device}: {device_summary(device)}", flush=True)
    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="precision-runs-")
    out = Path(args.out or tmp.name)
    subsets = [s.strip() for s in args.subsets.split(";") if s.strip()]
    rows, within = [], 0
    for spec in subsets:
        sub = load_subset(spec, data_dir=args.data_dir, verbose=False)
        for precision in ("fp32", "bf16"):  # warm-up, not recorded: first-call costs are not the recipe's
            train(make_config("improved", classes=sub.classes.ids, epochs=1, precision=precision,
                              device=str(device), dry_run=True), sub)
        recs = {p: [] for p in ("fp32", "bf16")}
        for seed in range(args.seeds):
            for precision in recs:
                cfg = make_config("improved", classes=sub.classes.ids, pooling=args.pooling, seed=seed,
                                  precision=precision, device=str(device), dry_run=args.dry_run)
                rec = run(cfg, out=out, subset=sub, live="none")
                if rec.reused and rec.metrics.get("device") != str(device):  # its seconds were timed elsewhere
                    rec = run(cfg, out=out, subset=sub, live="none", force=True)
                recs[precision].append(rec)
                m = rec.metrics
                print(f"  {spec:20s} seed {seed} {precision} ({m['precision']}): test {m['test_acc']:.4f}  "
                      f"{m['train_seconds'] / m['epochs']:.3f} s/epoch", flush=True)
        # the library's pairing: per-image correctness of each seed, checked to be the same test images
        (bf16,), (fp32,) = (group_records(recs[p], dry_runs=args.dry_run) for p in ("bf16", "fp32"))
        paired_diff = paired(bf16, fp32, "test")
        within += not paired_diff.distinguishable
        acc = {p: [r.metrics["test_acc"] for r in rs] for p, rs in recs.items()}
        spe = {p: statistics.mean(r.metrics["train_seconds"] / r.metrics["epochs"] for r in rs)
               for p, rs in recs.items()}
        rows.append((spec, acc, paired_diff, spe))

    def pm(v):
        return f"{statistics.mean(v):.4f} ± {statistics.stdev(v) if len(v) > 1 else 0:.4f}"
    print(f"\n{'subset':20s} {'fp32 test acc':>16s} {'bf16 test acc':>16s} {'bf16 - fp32 (95% interval)':>34s} "
          f"{'verdict':>16s} {'fp32 s/ep':>9s} {'bf16 s/ep':>9s} {'speedup':>7s}")
    for spec, acc, diff, spe in rows:
        verdict = "differ" if diff.distinguishable else "within noise"
        print(f"{spec:20s} {pm(acc['fp32']):>16s} {pm(acc['bf16']):>16s} {diff.interval():>34s} {verdict:>16s} "
              f"{spe['fp32']:9.3f} {spe['bf16']:9.3f} {spe['fp32'] / spe['bf16']:6.2f}x")
    ratio = statistics.mean(fp32 / bf16 for fp32, bf16 in ((r[3]["fp32"], r[3]["bf16"]) for r in rows))
    print(f"bf16 vs fp32, improved preset ({args.pooling}): {ratio:.2f}x per epoch; test accuracy within noise on "
          f"{within} of {len(rows)} subsets")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
