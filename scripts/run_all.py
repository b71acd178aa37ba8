"""Run the whole notebook suite with papermill: what ``make run-all`` calls (steps, options: docs/cli.md).

    python scripts/run_all.py --out out --classes "apple otter pickup_truck" --seeds 2

00_pick_classes, then 01_train once per (model, pooling, seed) - each run its own executed notebook,
skipped when its record is already in ``<out>/runs`` (``--force`` retrains) - then 02_compare, then
03_reload in a fresh kernel. Records of every experiment share ``<out>/runs``; each experiment gets its
own ``<out>/<experiment>/`` with the executed notebooks and ``best/``. Interrupted, a rerun picks up where
it stopped; a failing cell stops the suite with a non-zero exit, its executed notebook kept.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # numbers stay strings here: plan_runs checks them and names them as make does (SEEDS=abc), in one line
    ap.add_argument("--out", default="out", help="records in OUT/runs, each experiment's notebooks and best/ beside "
                                                 "(default out)")
    ap.add_argument("--classes", default="0 55 58", help="ids or names, space- or comma-separated")
    ap.add_argument("--seeds", default="2", help="seeds per configuration (0..N-1; default 2)")
    ap.add_argument("--models", default="improved template",
                    help="presets or your own net as FILE.py:CLASS, space-separated (default 'improved template')")
    ap.add_argument("--poolings", default="stride max avg", help="default 'stride max avg'")
    ap.add_argument("--epochs", default=None, help="epochs for every run (default: each preset's)")
    ap.add_argument("--template-epochs", default=None,
                    help="epochs for the template runs when --epochs is not given (default: the course's 500; "
                         "make passes 150)")
    ap.add_argument("--data-dir", default=None, help="where CIFAR-100 is or goes (default: $CIFARLAB_DATA, else "
                                                     "the cache; the shipped sample needs none)")
    ap.add_argument("--force", nargs="?", const="1", default="0",
                    help="retrain runs whose records exist: 1/true/yes/on or 0/false/no/off (make FORCE=...)")
    ap.add_argument("--kernel", default="cifarlab", help="Jupyter kernel name (make setup registers 'cifarlab')")
    args = ap.parse_args(argv)

    from cifarlab.config import coerce
    from cifarlab.data import check_data_dir
    from cifarlab.errors import CifarlabError
    from cifarlab.export import check_best_target
    from cifarlab.files import check_writable_dir, user_path
    from cifarlab.ownnet import portable
    from cifarlab.pretrain import check_pretraining_data
    from cifarlab.records import reusable_record
    from cifarlab.sweep import plan_runs

    # '0 55 58' -> [0, 55, 58]; 'apple otter' -> ['apple', 'otter'] (names or superclasses)
    classes = [int(p) if p.isdigit() else p for p in args.classes.replace(",", " ").split()]
    # Every run's config, checked before anything runs: a bad parameter costs a second, not a suite.
    try:
        force = coerce("FORCE", args.force, bool)
        out = check_writable_dir(args.out, "OUT")
        runs = out / "runs"
        # the notebooks run with OUT as their working folder: pass the data folder as an absolute path
        data_dir = str(user_path(args.data_dir, "DATA_DIR")) if args.data_dir else None
        plan = plan_runs(classes, args.models, args.poolings, args.seeds, args.epochs, args.template_epochs,
                         terms="make")
        first = plan[0]
        exp = out / first.experiment_name
        check_data_dir(data_dir, "DATA_DIR")
        check_pretraining_data(plan, data_dir)   # improved+pretrained needs the full data: said now, not later
        check_best_target(exp / "best")
    except CifarlabError as e:
        print(f"run_all: error: {e}", file=sys.stderr)
        return 2

    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    (exp / "notebooks").mkdir(parents=True, exist_ok=True)
    common = {"DATA_DIR": data_dir}

    # Ctrl-C stops the suite wherever it lands: one that arrives while papermill shuts a kernel down can be
    # swallowed there, so it is also remembered here and acted on once that notebook returns.
    ctrl_c = []

    def on_ctrl_c(signum, frame):
        ctrl_c.append(signum)
        signal.default_int_handler(signum, frame)
    before = signal.signal(signal.SIGINT, on_ctrl_c)

    def execute(name: str, target: str, **params) -> None:
        t0 = time.perf_counter()
        print(f"--> {name} {params}", flush=True)
        pm.execute_notebook(str(NOTEBOOKS / name), str(exp / "notebooks" / target), parameters={**common, **params},
                            kernel_name=args.kernel, progress_bar=False, cwd=str(out))
        if ctrl_c:
            raise KeyboardInterrupt
        print(f"    done in {time.perf_counter() - t0:.1f} s -> {exp / 'notebooks' / target}", flush=True)

    def interrupted() -> int:
        print(f"\nrun_all: interrupted; finished records are kept in {runs}: run the same command again to "
              f"resume", file=sys.stderr)
        return 130

    t_start = time.perf_counter()
    print(f"experiment {first.experiment_label}: {len(plan)} runs -> {runs}, comparison -> {exp}", flush=True)
    trained = skipped = 0
    try:
        execute("00_pick_classes.ipynb", "00_pick_classes.ipynb", CLASSES=classes)
        for cfg in plan:
            existing = reusable_record(runs, cfg, force)
            if existing is not None:
                state = "" if existing.ok else ", diverged"
                print(f"skipped: {cfg.title} (record exists{state}: {existing.path})", flush=True)
                skipped += 1
                continue
            # one run per notebook: a single model, tactic and seed ([seed]: SEEDS=1 would mean a count); your own
            # net by its FILE:CLASS, which the notebook loads again
            execute("01_train.ipynb", f"01_train_{cfg.net_name}_{cfg.pooling}_seed{cfg.seed}.ipynb", CLASSES=classes,
                    MODELS=portable(cfg.net) if cfg.net else cfg.net_name, POOLINGS=cfg.pooling, SEEDS=[cfg.seed],
                    EPOCHS=cfg.epochs, OUT=str(runs), LIVE=False, USE_PICKER=False, FORCE=force)
            trained += 1
        execute("02_compare.ipynb", "02_compare.ipynb", RUNS=str(runs), BEST=str(exp / "best"),
                EXPERIMENT=first.experiment_name)
        execute("03_reload.ipynb", "03_reload.ipynb", BEST=str(exp / "best"), EXPECT_CLASSES=list(first.classes))
    except PapermillExecutionError as e:
        if ctrl_c or e.ename == "KeyboardInterrupt":   # the kernel got the Ctrl-C too: an interruption, not a failure
            return interrupted()
        print(f"run_all: a cell failed: {e.ename}: {e.evalue}\n(see the executed notebook under {exp / 'notebooks'}; "
              f"finished records are kept, and a rerun skips them)", file=sys.stderr)
        return 1
    except CifarlabError as e:
        print(f"run_all: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return interrupted()
    finally:
        signal.signal(signal.SIGINT, before)
    print(f"suite finished in {time.perf_counter() - t_start:.0f} s ({trained} runs trained, {skipped} skipped: "
          f"record exists); records in {runs}, comparison and chosen model in {exp}")
    best = exp / "best"
    if best.is_relative_to(NOTEBOOKS.parent):  # make web serves the repository root
        rel = best.relative_to(NOTEBOOKS.parent)
        print(f"web page: make web, then open http://127.0.0.1:8000/web/?model=/{rel}/model.onnx"
              f"&classes=/{rel}/classes.json")
    else:
        print(f"web page: make web, open http://127.0.0.1:8000/web/ and pick model.onnx and classes.json from {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
