"""Transfer: the improved net from scratch vs pretrained on the other CIFAR-100 classes, then fine-tuned.

    python benchmarks/transfer.py --data-dir /path/with/cifar-100-python --out /tmp/transfer
    python benchmarks/transfer.py --subsets "0,55,58" --seeds 2 --pretrain-epochs 1   # quicker

Per class subset (default: the project's three benchmark subsets), ``improved`` and ``improved+pretrained``
(the presets, one pooling tactic) with the same seeds, each run a sweep run with its own record (records
already in ``--out`` are reused, so a second call only reports). Each subset's backbone - the net pretrained
on every other class - is made once and reused by its seeds; its cost is printed beside the fine-tuning
time. The difference is judged paired (the same test images score both sides, seeds as seeds) with the
library's own ``paired_difference``. The last line:

  pretrained vs scratch: +<d> points mean test acc (<k> of <n> subsets distinguishable), pretraining <s> s once
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from machine import device_summary

from cifarlab.comparison import group_records, paired
from cifarlab.config import PRESETS
from cifarlab.hardware import pick_device
from cifarlab.records import find_records
from cifarlab.sweep import make_sweep, run_sweep

SUBSETS = ["0,55,58", "vehicles_1", "dolphin,shark,whale"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subsets", nargs="+", default=SUBSETS, help="class subsets, each comma-separated")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pooling", default="max")
    ap.add_argument("--pretrain-epochs", type=int, default=None,
                    help=f"default: the preset's ({PRESETS['improved+pretrained']['pretrain_epochs']})")
    ap.add_argument("--epochs", type=int, default=None, help="fine-tuning and scratch epochs (default: the presets')")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="transfer-runs", help="run records and backbones (reused when there)")
    ap.add_argument("--dry-run", action="store_true", help="two training steps a run: checks the script only")
    args = ap.parse_args()

    print(device_summary(pick_device("auto")), flush=True)
    overrides = {} if args.pretrain_epochs is None else {"pretrain_epochs": args.pretrain_epochs}
    plan = make_sweep(args.subsets, ["improved", "improved+pretrained"], [args.pooling], args.seeds, args.epochs,
                      overrides=None, dry_run=args.dry_run)
    if overrides:   # the pretraining length for the pretrained runs only (a sweep override would set it for both)
        from cifarlab.sweep import Sweep
        plan = Sweep(tuple(c.replace(**overrides) if c.pretrain_epochs else c for c in plan.configs))
    t0 = time.perf_counter()
    run_sweep(plan, args.out, data_dir=args.data_dir, progress=False)
    print(f"sweep wall time {time.perf_counter() - t0:.0f} s", flush=True)

    records = [r for r in find_records(args.out) if r.config.run_id in {c.run_id for c in plan.configs}]
    gains, clear, pre_seconds, rows = [], 0, [], []
    for exp_id, cfgs in plan.experiments().items():
        groups = group_records([r for r in records if r.config.experiment_id == exp_id], dry_runs=args.dry_run)
        scratch = next(g for g in groups if not g.records[0].config.pretrain_epochs)
        pre = next(g for g in groups if g.records[0].config.pretrain_epochs)
        p = paired(pre, scratch, "test")
        info = pre.records[0].metrics["backbone"]      # what the run's record says of its backbone
        fine = statistics.mean(r.metrics["train_seconds"] for r in pre.records)
        gains.append(p.diff)
        clear += p.distinguishable and p.diff > 0
        pre_seconds.append(info["seconds"])
        rows.append(f"{cfgs[0].experiment_name:24s} scratch {scratch.mean('test_acc'):.4f} ± "
                    f"{scratch.std('test_acc'):.4f}  pretrained {pre.mean('test_acc'):.4f} ± {pre.std('test_acc'):.4f}"
                    f"  diff {p.interval()}"
                    f"{' distinguishable' if p.distinguishable else ' NOT distinguishable'}; backbone "
                    f"{info['seconds']:.0f} s ({info['epochs']} epochs on {info['train_images']} images, val acc "
                    f"{info['val_acc']:.3f}), fine-tuning {fine:.1f} s vs scratch "
                    f"{statistics.mean(r.metrics['train_seconds'] for r in scratch.records):.1f} s a run")
    print(f"{args.seeds} seeds, {args.pooling} pooling, paired on the test images; out {Path(args.out)}")
    print("\n".join(rows))
    print(f"pretrained vs scratch: {100 * statistics.mean(gains):+.1f} points mean test acc ({clear} of {len(gains)} "
          f"subsets distinguishable), pretraining {statistics.mean(pre_seconds):.0f} s once")


if __name__ == "__main__":
    main()
