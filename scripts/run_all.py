"""Run the whole notebook suite with papermill: what ``make run-all`` calls.

    python scripts/run_all.py --out out --classes "apple otter pickup_truck" --seeds 2

0. ``00_pick_classes.ipynb``: prints the selection (no widget front end under papermill);
1. ``01_train.ipynb`` once per (model, pooling, seed): the improved net for the three pooling
   tactics, and the template net as the baseline;
2. ``02_compare.ipynb`` on the records: table, choice, ``best/`` with ONNX;
3. ``03_reload.ipynb`` in its own fresh kernel: reload ``best/`` and reproduce the numbers.

Executed notebooks go to ``<out>/notebooks``, records to ``<out>/runs``, the chosen model to
``<out>/best``. A failing cell stops the suite with a non-zero exit; the executed notebook,
error included, is kept.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _classes(text: str) -> list:
    """'0 55 58' -> [0, 55, 58]; 'apple otter' -> ['apple', 'otter'] (names or superclasses)."""
    parts = text.replace(",", " ").split()
    return [int(p) if p.isdigit() else p for p in parts]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out")
    ap.add_argument("--classes", default="0 55 58", help="ids or names, space- or comma-separated")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per configuration (0..N-1)")
    ap.add_argument("--models", default="improved template")
    ap.add_argument("--poolings", default="stride max avg")
    ap.add_argument("--epochs", type=int, default=None, help="epochs for every run (default: each preset's)")
    ap.add_argument("--template-epochs", type=int, default=None, help="epochs for the template baseline")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--kernel", default="cifarlab", help="Jupyter kernel name (make setup registers 'cifarlab')")
    args = ap.parse_args(argv)

    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from cifarlab.classes import ClassSelectionError, select_classes

    classes = _classes(args.classes)
    try:
        select_classes(classes)
    except ClassSelectionError as e:
        print(f"run_all: error: CLASSES: {e}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    runs, best = out / "runs", out / "best"
    common = {"DATA_DIR": args.data_dir}

    def execute(name: str, target: str, **params) -> None:
        t0 = time.perf_counter()
        print(f"--> {name} {params}", flush=True)
        pm.execute_notebook(str(NOTEBOOKS / name), str(out / "notebooks" / target), parameters={**common, **params},
                            kernel_name=args.kernel, progress_bar=False, cwd=str(out))
        print(f"    done in {time.perf_counter() - t0:.1f} s -> {out / 'notebooks' / target}", flush=True)

    t_start = time.perf_counter()
    try:
        execute("00_pick_classes.ipynb", "00_pick_classes.ipynb", CLASSES=classes)
        for model in args.models.split():
            for pooling in args.poolings.split():
                for seed in range(args.seeds):
                    epochs = args.epochs or (args.template_epochs if model == "template" else None)
                    execute("01_train.ipynb", f"01_train_{model}_{pooling}_seed{seed}.ipynb", CLASSES=classes,
                            MODEL=model, POOLING=pooling, SEED=seed, EPOCHS=epochs, OUT=str(runs), LIVE=False,
                            USE_PICKER=False)
        execute("02_compare.ipynb", "02_compare.ipynb", RUNS=str(runs), BEST=str(best))
        execute("03_reload.ipynb", "03_reload.ipynb", BEST=str(best))
    except PapermillExecutionError as e:
        print(f"run_all: a cell failed: {e.ename}: {e.evalue}\n(see the executed notebook under {out / 'notebooks'})",
              file=sys.stderr)
        return 1
    print(f"suite finished in {time.perf_counter() - t_start:.0f} s; records in {runs}, chosen model in {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
