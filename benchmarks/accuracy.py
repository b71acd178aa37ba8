"""Accuracy: the improved net and recipe vs the course's template, per pooling tactic, over seeds.

    python benchmarks/accuracy.py --classes 0,55,58 --seeds 3
    python benchmarks/accuracy.py --classes vehicles_1 --seeds 3 --data-dir /path/with/cifar-100-python

Each run follows the project's honest protocol: trained on the training split, its epochs and
recipe fixed in advance (the presets), the validation split for choosing, the test set evaluated
once at the end. Prints a table of mean ± std over seeds (test accuracy, macro-F1, flip-TTA test
accuracy, validation accuracy, training seconds), then the final line

  improved <best tactic>: test_acc <mean> ± <std> in <seconds> s vs template avg: <mean> ± <std> in <seconds> s

where the best improved tactic is the one with the highest mean *validation* accuracy.
``--json`` appends every run's numbers to a file (benchmarks/accuracy_results.json).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from cifarlab.config import POOLINGS, make_config
from cifarlab.data import load_subset
from cifarlab.engine import train
from cifarlab.evaluation import evaluate_final


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
    ap.add_argument("--json", default=None, help="append per-run results to this JSON-lines file")
    ap.add_argument("--dry-run", action="store_true", help="two training steps per run: checks the script, not the nets")
    args = ap.parse_args()

    sub = load_subset(args.classes, data_dir=args.data_dir, verbose=False)
    print(f"classes {sub.classes} ({len(sub.y_train)} train / {len(sub.y_val)} val / {len(sub.y_test)} test), "
          f"{args.seeds} seeds; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.machine()} {platform.processor()}", flush=True)
    results: dict[tuple[str, str], list[dict]] = {}
    for model in args.models.split(","):
        tactics = args.template_poolings if model == "template" and args.template_poolings else args.poolings
        for pooling in tactics.split(","):
            for seed in range(args.seeds):
                cfg = make_config(model, classes=sub.classes.ids, pooling=pooling, seed=seed, device=args.device,
                                  dry_run=args.dry_run)
                r = train(cfg, sub)
                m = evaluate_final(r, sub).metrics
                row = {k: m.get(k) for k in ("model", "pooling", "seed", "test_acc", "test_macro_f1", "test_acc_tta",
                                             "val_acc", "train_acc", "train_seconds", "epochs", "device")}
                row["classes"] = list(sub.classes.ids)
                row["hidden_size"] = cfg.hidden_size
                results.setdefault((model, pooling), []).append(row)
                print(f"  {model:8s} {pooling:6s} seed {seed}: test {row['test_acc']:.4f}  val {row['val_acc']:.4f}  "
                      f"train {row['train_acc']:.4f}  {row['train_seconds']:.1f} s", flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps({**row, "machine": platform.machine(), "when": time.strftime("%Y-%m-%d")}) + "\n")

    print(f"\n{'config':18s} {'test acc':>17s} {'macro-F1':>17s} {'test acc (TTA)':>17s} {'val acc':>17s} {'train s':>13s}")
    for (model, pooling), rows in results.items():
        cells = []
        for key in ("test_acc", "test_macro_f1", "test_acc_tta", "val_acc"):
            vals = [r[key] for r in rows if r[key] is not None]
            cells.append(f"{mean_std(vals)[0]:.4f} ± {mean_std(vals)[1]:.4f}" if vals else "-")
        s = mean_std([r["train_seconds"] for r in rows])
        print(f"{model + '/' + pooling:18s} " + " ".join(f"{c:>17s}" for c in cells) + f" {s[0]:7.1f} ± {s[1]:4.1f}")

    improved = {p: rows for (m, p), rows in results.items() if m == "improved"}
    template = results.get(("template", "avg"))
    if improved and template:
        best = max(improved, key=lambda p: statistics.mean(r["val_acc"] for r in improved[p]))
        ia, ta = (mean_std([r["test_acc"] for r in rs]) for rs in (improved[best], template))
        isec, tsec = (statistics.mean(r["train_seconds"] for r in rs) for rs in (improved[best], template))
        print(f"improved {best}: test_acc {ia[0]:.4f} ± {ia[1]:.4f} in {isec:.1f} s vs template avg: "
              f"{ta[0]:.4f} ± {ta[1]:.4f} in {tsec:.1f} s")


if __name__ == "__main__":
    main()
