"""Command line: ``python -m cifarlab train | compare | sweep | classes | download``; examples, options and exit
codes: docs/cli.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from .config import CHOICES, POOLINGS, PRESETS, RUNTIME_FIELDS, RunConfig
from .ownnet import is_own
from .sweep import DEFAULT_GPU_SHARE, DEFAULT_RETRIES, ENGINES


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _flag(value: str) -> bool:
    """``--force`` alone is on; ``--force 0/no/off`` (what ``make FORCE=0`` passes) is off: the config's coercion."""
    from .config import ConfigError, coerce
    try:
        return coerce("--force", value, bool)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_config_options(p: argparse.ArgumentParser) -> None:
    """Every RunConfig field as an option. Values stay strings here: the config checks and coerces
    them, so the command line and Python give the same one-line errors."""
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "dry_run":
            p.add_argument(flag, action="store_true", default=None, help="train two steps only (smoke test)")
        elif f.name == "net":   # computed from your net, never given
            continue
        elif f.name == "model":
            p.add_argument(flag, default=None, metavar="template|improved|FILE.py:CLASS",
                           help="a shipped net, or your own nn.Module class in a file (with --preset's recipe; "
                                "without --preset, improved's, as in the notebooks)")
        elif f.name == "classes":
            p.add_argument(flag, default=None, help="ids, names or superclasses, comma-separated (default 0,55,58)")
        else:
            choices = CHOICES.get(f.name)
            preset_sets = any(f.name in preset for preset in PRESETS.values())
            default = f"--preset's, else {f.default} (your own net: improved's)" if preset_sets else f.default
            p.add_argument(flag, default=None, metavar="|".join(choices) if choices else None,
                           help=f"default: {default}" + (" (not part of the run's identity)"
                                                         if f.name in RUNTIME_FIELDS else ""))


def _train(args) -> int:
    from .config import make_config

    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(RunConfig)}
    # your own net without --preset trains with the improved recipe, as in the notebooks (not 500 template epochs)
    preset = args.preset or ("improved" if is_own(args.model or "") else None)
    cfg = make_config(preset, **overrides)   # checked before torch is even imported
    from .experiment import run, summarize
    record = run(cfg, out=args.out, data_dir=args.data_dir, live=args.live, force=args.force)
    print(summarize(record))
    return 0


def _compare(args) -> int:
    from .comparison import compare_and_save

    c = compare_and_save(args.runs, args.best, args.experiment, args.data_dir)
    print(c.report())
    if c.saved is not None:
        print(f"\nsaved {c.choice.record.path} to {c.saved['folder']} with model.onnx (opset {c.saved['opset']}, "
              f"max |onnxruntime - torch| {max(c.saved['max_abs_diff'].values()):.2e})")
    return 0


def _sweep(args) -> int:
    from .sweep import SweepError, make_sweep, run_sweep

    overrides: dict = {}
    for item in args.set or []:
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key or not value.strip():
            raise SweepError(f"--set {item!r}: give KEY=VALUE, or KEY=V1,V2 for one run per value (e.g. --set lr=0.05)")
        overrides[key] = [v.strip() for v in value.split(",") if v.strip()]   # a list: one run per value
    plan = make_sweep(args.classes, args.models, args.poolings, args.seeds, args.epochs, args.template_epochs,
                      overrides, args.dry_run, args.device)   # every config checked before anything loads
    result = run_sweep(plan, args.out, engine=args.engine, address=args.address, cpus_per_run=args.cpus_per_run,
                       gpus_per_run=args.gpus_per_run, retries=args.retries, force=args.force,
                       data_dir=args.data_dir, worker_data_dir=args.worker_data_dir, progress=not args.no_bar)
    print()
    print(result.report(), flush=True)
    if result.failed:
        print(f"cifarlab: error: {len(result.failed)} run(s) ended without a record (listed above); run the same "
              f"command again to retry them - finished records are kept", file=sys.stderr)
        return 1
    return 0


def _download(args) -> int:
    from .data import ensure_dataset
    print(f"CIFAR-100 is in {ensure_dataset(args.data_dir)}")
    return 0


def _classes(args) -> int:
    from .classes import describe_catalogue
    print(describe_catalogue())
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="cifarlab", description="Train CNNs on your own CIFAR-100 classes and compare pooling tactics.")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train one run and write its record")
    t.add_argument("--preset", choices=sorted(PRESETS), default=None, help="start from a named recipe")
    t.add_argument("--out", default="runs", help="folder for run records (default runs)")
    t.add_argument("--data-dir", default=None, help="CIFAR-100 folder (default $CIFARLAB_DATA or ~/.cache/cifarlab)")
    t.add_argument("--live", default="auto", choices=["auto", "bar", "quiet", "none"], help="progress display")
    t.add_argument("--force", nargs="?", const=True, default=False, type=_flag, metavar="yes|no",
                   help="retrain even when a complete record of this exact run exists (default: reuse it)")
    _add_config_options(t)
    t.set_defaults(func=_train)
    c = sub.add_parser("compare", help="compare run records, choose, save best/ with ONNX")
    c.add_argument("--runs", default="runs", help="folder of run records (default runs)")
    c.add_argument("--experiment", default=None,
                   help="which experiment, by name or classes (needed when the runs folder holds several)")
    c.add_argument("--best", default=None, help="folder to save the chosen model to (new, empty, or a previous "
                                                "best folder; anything else is refused)")
    c.add_argument("--data-dir", default=None)
    c.set_defaults(func=_compare)
    s = sub.add_parser("sweep", help="many runs (class subsets x models x poolings x seeds), locally or on Ray; "
                                     "then one comparison per class subset and the answer across them")
    s.add_argument("--classes", action="append", default=None, metavar="CLASSES",
                   help="one class subset: ids, names or a superclass, comma-separated; repeat the option for each "
                        "subset (default 0,55,58)")
    s.add_argument("--models", nargs="+", default=["improved", "template"], metavar="MODEL",
                   help="presets: improved, template, improved+pretrained, or your own net as FILE.py:CLASS "
                        "(default improved template)")
    s.add_argument("--poolings", nargs="+", default=list(POOLINGS), metavar="POOLING",
                   help=f"tactics: {', '.join(POOLINGS)} (default all three)")
    s.add_argument("--seeds", default="2", help="seeds per configuration, 0..N-1 (default 2)")
    s.add_argument("--epochs", default=None, help="epochs for every run (default: each preset's)")
    s.add_argument("--template-epochs", default=None, help="epochs for template runs when --epochs is not given")
    s.add_argument("--set", action="append", default=None, metavar="KEY=VALUE[,VALUE...]",
                   help="a recipe override for every run (--set lr=0.05); several values make one run per value")
    s.add_argument("--dry-run", action="store_true", help="two training steps a run (a smoke test; not compared)")
    s.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N, mps (default auto)")
    s.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: one run after another in this process (default); ray: Ray tasks, on a local Ray "
                        "(127.0.0.1 only) or the cluster at --address / $RAY_ADDRESS")
    s.add_argument("--address", default=None, help="Ray cluster to join, HOST:PORT of its head (default $RAY_ADDRESS; "
                                                   "none: start a local Ray)")
    s.add_argument("--cpus-per-run", type=float, default=None,
                   help="CPUs (= torch threads) per run (ray default: the CPUs shared out among the runs, at least 1; "
                        "local default: torch's own)")
    s.add_argument("--gpus-per-run", type=float, default=None,
                   help=f"share of a GPU per run on a cluster with GPUs (default {DEFAULT_GPU_SHARE:g}: "
                        f"{round(1 / DEFAULT_GPU_SHARE)} runs per GPU)")
    s.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                   help=f"retries of a run whose worker dies (default {DEFAULT_RETRIES})")
    s.add_argument("--out", default="sweep", help="folder for the run records (default sweep)")
    s.add_argument("--data-dir", default=None, help="CIFAR-100 folder of this machine (the driver loads every class "
                                                    "subset once and sends it to the workers)")
    s.add_argument("--worker-data-dir", default=None,
                   help="ray: workers load the classes from this folder on their own disk instead")
    s.add_argument("--force", nargs="?", const=True, default=False, type=_flag, metavar="yes|no",
                   help="retrain runs whose records exist (default: skip them)")
    s.add_argument("--no-bar", action="store_true", help="no progress bar (a line per finished run still)")
    s.set_defaults(func=_sweep)
    d = sub.add_parser("download", help="get the full CIFAR-100 (169 MB; the sample shipped with cifarlab holds "
                                        "only classes 0, 55, 58): what pretraining and other classes need")
    d.add_argument("--data-dir", default=None, help="where to put it (default $CIFARLAB_DATA or ~/.cache/cifarlab)")
    d.set_defaults(func=_download)
    k = sub.add_parser("classes", help="list the 100 classes by superclass")
    k.set_defaults(func=_classes)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import CifarlabError
    try:
        rc = args.func(args)
        sys.stdout.flush()   # here, where a closed pipe is caught, not at exit
        return rc
    except BrokenPipeError:   # `... | head` stopped reading: end quietly, as `yes | head` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit
        return 141   # 128 + SIGPIPE: the shell's status for a writer whose reader went away
    except CifarlabError as e:
        if os.environ.get("CIFARLAB_DEBUG"):
            raise
        from .errors import student_traceback
        print("".join(student_traceback(e)) + f"cifarlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("cifarlab: interrupted; finished records are kept, an unfinished one is not written", file=sys.stderr)
        return 130
    except Exception as e:  # a full accelerator is not a bad argument: rc 1, with what to do
        import torch
        if isinstance(e, torch.OutOfMemoryError):
            print(f"cifarlab: error: the device ran out of memory ({str(e).splitlines()[0]}); lower --batch-size, "
                  f"or use --device cpu", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
