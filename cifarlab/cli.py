"""Command line: ``python -m cifarlab <command>``.

    python -m cifarlab train --classes apple,otter,pickup_truck --pooling max --epochs 30 --out runs
    python -m cifarlab train --preset template --pooling avg --classes 0,55,58 --out runs
    python -m cifarlab train --dry-run                  # two steps: a smoke test
    python -m cifarlab compare --runs runs --best best  # table, choice, best/ with ONNX
    python -m cifarlab classes                          # the 100 classes by superclass

Every RunConfig field is an option of ``train`` (``--lr``, ``--batch-size``, ``--augment`` ...).
Bad arguments end with one line saying what is wrong and exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing

from .config import PRESETS, RunConfig


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _bool(s: str) -> bool:
    v = str(s).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def _add_config_options(p: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "dry_run":
            p.add_argument(flag, action="store_true", default=None, help="train two steps only (smoke test)")
            continue
        t = hints[f.name]
        if f.name == "classes":
            p.add_argument(flag, default=None, help="ids, names or superclasses, comma-separated (default 0,55,58)")
        elif t is bool:
            p.add_argument(flag, type=_bool, default=None, metavar="true|false", help=f"default {f.default}")
        else:
            p.add_argument(flag, type=t if t in (int, float) else str, default=None, help=f"default {f.default}")


def _train(args) -> int:
    from .config import make_config
    from .experiment import run, summarize

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)}
    cfg = make_config(args.preset, **overrides)
    record = run(cfg, out=args.out, data_dir=args.data_dir, live=args.live)
    print(summarize(record))
    return 0


def _compare(args) -> int:
    from .comparison import CHOICE_RULE, choose, group_records, table
    from .data import subset_for
    from .export import save_best
    from .records import find_records

    records = find_records(args.runs)
    groups = group_records(records)
    if not groups:
        raise ValueError(f"no completed run records under {args.runs}: train some runs first")
    print(table(groups))
    choice = choose(groups)
    print("\nRule: " + CHOICE_RULE)
    print("Choice: " + choice.explanation)
    print(choice.distinguishable)
    if args.best:
        subset = subset_for(choice.record.config, args.data_dir, verbose=False)
        check = save_best(choice.record, args.best, {"rule": CHOICE_RULE, "explanation": choice.explanation},
                          subset.x_test[:8])
        print(f"saved {choice.record.path} to {args.best} with model.onnx (opset {check['opset']}, "
              f"max |onnxruntime - torch| {max(check['max_abs_diff'].values()):.2e})")
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
    _add_config_options(t)
    t.set_defaults(func=_train)
    c = sub.add_parser("compare", help="compare run records, choose, save best/ with ONNX")
    c.add_argument("--runs", default="runs")
    c.add_argument("--best", default=None, help="folder to save the chosen model to (e.g. best)")
    c.add_argument("--data-dir", default=None)
    c.set_defaults(func=_compare)
    k = sub.add_parser("classes", help="list the 100 classes by superclass")
    k.set_defaults(func=_classes)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .classes import ClassSelectionError
    from .config import ConfigError
    from .data import DataError
    from .engine import TrainingDiverged
    from .export import ExportError
    try:
        return args.func(args)
    except (ConfigError, ClassSelectionError, DataError, TrainingDiverged, ExportError,
            FileNotFoundError, ValueError, RuntimeError) as e:
        if os.environ.get("CIFARLAB_DEBUG"):
            raise
        print(f"cifarlab: error: {e}", file=sys.stderr)
        return 1 if isinstance(e, (TrainingDiverged, DataError)) else 2
    except KeyboardInterrupt:
        print("cifarlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
