"""Accuracy: the improved net and recipe vs the course's template, per pooling tactic, over seeds.

    python benchmarks/accuracy.py --classes 0,55,58 --seeds 3
    python benchmarks/accuracy.py --classes vehicles_1 --seeds 3 --data-dir /path/with/cifar-100-python

Each run follows the project's honest protocol: trained on the training split, its epochs and
recipe fixed in advance (the presets), the validation split for choosing, the test set evaluated
once at the end. Prints a table of mean ± std over seeds (test accuracy, macro-F1, flip-TTA test
accuracy, validation accuracy, training seconds), then the final line

  improved <best tactic>: test_acc <mean> ± <std> in <seconds> s vs template avg: <mean> ± <std> in <seconds> s

where the best improved tactic is the library's choice (cifarlab.comparison.choose: validation only,
ties judged on paired validation images, the fastest of tied tactics).
``--json`` appends every run's numbers to a file (benchmarks/accuracy_results.json).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from machine import device_summary

from cifarlab.comparison import choose, group_records
from cifarlab.config import POOLINGS, make_config
from cifarlab.data import load_subset
from cifarlab.experiment import run
from cifarlab.hardware import pick_device


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", default="0,55,58")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--models", default="template,improved")
    ap.add_argument("--poolings", default=",".join(POOLINGS))
    ap.add_argument("--template-poolings", default=None,
                    help="tactics for the template net (default: --poolings); 'avg' alone is the course's baseline")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default=None, help="override every preset's precision (auto, fp32, bf16)")
    ap.add_argument("--out", default=None, help="keep the run records here (default: a temporary folder); "
                                                "records already there are reused")
    ap.add_argument("--json", default=None, help="append per-run results to this JSON-lines file")
    ap.add_argument("--dry-run", action="store_true",
                    help="two training steps per run: checks the script, not the nets")
    args = ap.parse_args()

    sub = load_subset(args.classes, data_dir=args.data_dir, verbose=False)
    print(f"classes {sub.classes} ({len(sub.y_train)} train / {len(sub.y_val)} val / {len(sub.y_test)} test), "
          f"{args.seeds} seeds; {device_summary(pick_device(args.device))}", flush=True)
    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="accuracy-runs-")
    out = Path(args.out or tmp.name)
    device = str(pick_device(args.device))
    records = []  # this invocation's runs only: nothing else in --out is mixed in
    for model in args.models.split(","):
        tactics = args.template_poolings if model == "template" and args.template_poolings else args.poolings
        for pooling in tactics.split(","):
            for seed in range(args.seeds):
                cfg = make_config(model, classes=sub.classes.ids, pooling=pooling, seed=seed, device=args.device,
                                  dry_run=args.dry_run, precision=args.precision)
                rec = run(cfg, out=out, subset=sub, live="none")
                if rec.reused and rec.metrics.get("device") != device:  # its seconds were timed elsewhere
                    rec = run(cfg, out=out, subset=sub, live="none", force=True)
                records.append(rec)
                m = rec.metrics
                row = {k: m.get(k) for k in ("model", "pooling", "seed", "test_acc", "test_macro_f1", "test_acc_tta",
                                             "val_acc", "train_acc", "train_seconds", "epochs", "device", "precision")}
                row["classes"] = list(sub.classes.ids)
                row["hidden_size"] = cfg.hidden_size
                print(f"  {model:8s} {pooling:6s} seed {seed}: test {row['test_acc']:.4f}  val {row['val_acc']:.4f}  "
                      f"train {row['train_acc']:.4f}  {row['train_seconds']:.1f} s ({row['precision']})", flush=True)
                if args.json and not rec.reused:
                    with open(args.json, "a") as f:
                        stamp = {"machine": platform.machine(), "when": time.strftime("%Y-%m-%d")}
                        f.write(json.dumps({**row, **stamp}) + "\n")

    groups = group_records(records, dry_runs=args.dry_run)
    print(f"\n{'config':18s} {'test acc':>17s} {'macro-F1':>17s} {'test acc (TTA)':>17s} {'val acc':>17s} "
          f"{'train s':>13s}")
    for g in groups:
        cells = []
        for key in ("test_acc", "test_macro_f1", "test_acc_tta", "val_acc"):
            vals = [r.metrics[key] for r in g.records if r.metrics.get(key) is not None]
            cells.append(f"{mean_std(vals)[0]:.4f} ± {mean_std(vals)[1]:.4f}" if vals else "-")
        s = mean_std([r.metrics["train_seconds"] for r in g.records])
        print(f"{g.label:18s} " + " ".join(f"{c:>17s}" for c in cells) + f" {s[0]:7.1f} ± {s[1]:4.1f}")

    improved = [g for g in groups if g.model == "improved"]
    template = [g for g in groups if g.model == "template" and g.pooling == "avg"]
    if improved and template:
        best = choose(improved).group  # the library's rule, on validation only
        ia, ta = (mean_std([r.metrics["test_acc"] for r in g.records]) for g in (best, template[0]))
        isec, tsec = (statistics.mean(r.metrics["train_seconds"] for r in g.records) for g in (best, template[0]))
        print(f"improved {best.pooling}: test_acc {ia[0]:.4f} ± {ia[1]:.4f} in {isec:.1f} s vs template avg: "
              f"{ta[0]:.4f} ± {ta[1]:.4f} in {tsec:.1f} s")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
