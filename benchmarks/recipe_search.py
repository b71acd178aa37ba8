"""Recipe search on validation splits only: how the ``improved`` preset is chosen.

    python benchmarks/recipe_search.py --data-dir /path/with/cifar-100-python \\
        --subsets "0,55,58;vehicles_1;dolphin,shark,whale;maple_tree,oak_tree,willow_tree;people" \\
        --candidates preset,w16 --pooling max --seeds 2 --workers 2

Every candidate is a set of overrides of the ``improved`` preset (see CANDIDATES). Each one is
trained with one pooling tactic (``--pooling``) on every subset for each seed, and scored by its
**validation** accuracy at the last epoch (the preset keeps the last epoch). The test arrays are
dropped before training, so this script cannot look at them even by mistake. Seed ``s`` also uses validation split ``s``
(``split_seed``), so a candidate is not chosen for luck on one particular 10% of the images.

The table gives mean validation accuracy per subset and over all subsets, and mean training
seconds. Runs go to ``--workers`` processes of one thread each; their seconds are therefore
single-thread seconds, comparable between candidates but not with benchmarks/accuracy.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from concurrent.futures import ProcessPoolExecutor

from cifarlab.config import POOLINGS

# The candidates of the searches recorded in recipe_search_results.md. They were run when the
# preset had width 12, so every one names its width: the commands there reproduce them as run.
CANDIDATES: dict[str, dict] = {
    "preset": {},                                    # the preset as it stands now
    "w12": dict(hidden_size=12),                     # the preset before the search (width 12, 30 epochs)
    "w12-bs64": dict(hidden_size=12, batch_size=64),
    "w12-e45": dict(hidden_size=12, epochs=45),
    "w12-nodrop": dict(hidden_size=12, dropout=0.0),
    "w12-ls0": dict(hidden_size=12, label_smoothing=0.0),
    "w12-lr0.2": dict(hidden_size=12, lr=0.2),
    "w12-adamw": dict(hidden_size=12, optimizer="adamw", lr=3e-3, weight_decay=5e-2),
    "w16": dict(hidden_size=16),
    "w16-e22": dict(hidden_size=16, epochs=22),      # about the time of w12 at 30 epochs
}

_SUBSETS: dict = {}                # per worker process: (classes, split seed) -> Subset without test arrays
_OPTIONS = {"data_dir": None, "pooling": "max", "dry_run": False}   # set in each worker by _init


def _init(data_dir: str | None, pooling: str, dry_run: bool = False) -> None:
    import torch
    torch.set_num_threads(1)
    _OPTIONS.update(data_dir=data_dir, pooling=pooling, dry_run=dry_run)


def _subset(classes: str, split_seed: int):
    import torch

    from cifarlab.data import load_subset
    key = (classes, split_seed)
    if key not in _SUBSETS:
        sub = load_subset(classes, data_dir=_OPTIONS["data_dir"], split_seed=split_seed, verbose=False)
        empty = torch.empty(0, 32, 32, 3, dtype=torch.uint8)
        _SUBSETS[key] = dataclasses.replace(sub, x_test=empty, y_test=torch.empty(0, dtype=torch.long))
    return _SUBSETS[key]


def _run(job: tuple[str, str, int]) -> dict:
    from cifarlab.config import make_config
    from cifarlab.engine import train
    from cifarlab.hardware import resolve_config
    cand, classes, seed = job
    sub = _subset(classes, seed)
    cfg = make_config("improved", **{"classes": sub.classes.ids, "seed": seed, "split_seed": seed,
                                     "pooling": _OPTIONS["pooling"], "dry_run": _OPTIONS["dry_run"],
                                     **CANDIDATES[cand]})
    r = train(resolve_config(cfg)[0], sub)   # the preset's precision "auto", decided for this machine
    last = r.history[-1]
    return {"candidate": cand, "subset": classes, "seed": seed, "val_acc": last["val_acc"],
            "val_loss": last["val_loss"], "train_acc": last["train_acc"], "train_seconds": r.train_seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subsets", default="0,55,58", help="class subsets separated by ';'")
    ap.add_argument("--candidates", default="preset", help=f"comma-separated; known: {', '.join(CANDIDATES)}")
    ap.add_argument("--pooling", default="max", choices=POOLINGS)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None, help="append per-run results to this JSON-lines file")
    ap.add_argument("--dry-run", action="store_true",
                    help="two training steps per run: checks the script, not the nets")
    args = ap.parse_args()

    cands = args.candidates.split(",")
    unknown = [c for c in cands if c not in CANDIDATES]
    if unknown:
        ap.error(f"unknown candidate(s) {', '.join(unknown)}; known: {', '.join(CANDIDATES)}")
    subsets = [s.strip() for s in args.subsets.split(";") if s.strip()]
    jobs = [(c, s, seed) for s in subsets for seed in range(args.seeds) for c in cands]
    rows = []
    init = (args.data_dir, args.pooling, args.dry_run)
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=init) as pool:
        for row in pool.map(_run, jobs):
            rows.append(row)
            print(f"  {row['candidate']:10s} {row['subset']:28s} seed {row['seed']}: val {row['val_acc']:.4f}  "
                  f"train {row['train_acc']:.4f}  {row['train_seconds']:.1f} s", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")

    width = max(12, *(len(s) for s in subsets))
    print(f"\n{'candidate':10s} " + " ".join(f"{s[:width]:>{width}s}" for s in subsets)
          + f" {'mean val':>9s} {'s/run':>7s}")
    for c in cands:
        mine = [r for r in rows if r["candidate"] == c]
        per = [statistics.mean(r["val_acc"] for r in mine if r["subset"] == s) for s in subsets]
        secs = statistics.mean(r["train_seconds"] for r in mine)
        print(f"{c:10s} " + " ".join(f"{p:>{width}.4f}" for p in per) + f" {statistics.mean(per):9.4f} {secs:7.1f}")


if __name__ == "__main__":
    main()
