"""Sweep throughput: the same sweep of short runs through the ``local`` engine and through Ray on this
machine.

    python benchmarks/sweep.py [--runs 12] [--epochs 15] [--repeats 2] [--classes 0,55,58] [--model template]
                               [--dry-run]

* local - one run at a time in one process, torch using every core (on 2 cores: 1 run x 2 threads, in
  turn);
* ray   - a local Ray started by the sweep (127.0.0.1 only), one run per core at once, one torch thread
  each (on 2 cores: 2 runs x 1 thread).

Two ways of timing them:

* **from the command line** (the last line): ``python -m cifarlab sweep ... --engine local`` vs
  ``--engine ray``, each a fresh process timed from start to exit - Python's start and imports, loading
  the classes, Ray's start and shutdown, the workers' first imports, the runs, the comparison printed at
  the end: what a user waits for;
* **warm**, in this process: the local engine after an earlier sweep, vs a Ray that was already running
  with warm workers (a notebook's ``ray.init()`` and an earlier sweep, or a cluster): the sweep alone.

Every run is a complete ``run()`` with its record written (training, final evaluation, figures), on the
classes' shipped sample, into a fresh folder. Then the same for one run's worth of work (a sweep of one
run: from the command line ``--engine ray`` trains it in its own process, Ray not started; warm, Ray gives
it every core, so it trains with as many threads as the local engine), which shows Ray's fixed cost.
The engines alternate over ``--repeats`` rounds and medians are reported (the machine may be shared: the
load average is printed). The last line is

  sweep throughput ray vs local: <r>x (<a> vs <b> runs/min, <n> runs, <k> workers)

On a GPU (CUDA available) both engines train there; ``--gpus-per-run`` (default 0.25 of a GPU per Ray
task) lets k runs share the GPU, against one at a time locally.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def load() -> str:
    try:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def cli(args, out: Path, engine: str, n: int, extra=()) -> tuple[float, int]:
    """Run the sweep as a user would, in a fresh process; return (wall seconds, runs at once)."""
    cmd = [sys.executable, "-m", "cifarlab", "sweep", *args, "--engine", engine, "--out", str(out), "--no-bar",
           *extra]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    wall = time.perf_counter() - t0
    done = [line for line in p.stdout.splitlines() if re.match(rf"^\[\d+/{n}\] .*test acc", line)]
    if p.returncode != 0 or len(done) != n:
        raise SystemExit(f"the {engine} sweep failed (rc {p.returncode}, {len(done)} of {n} runs):\n"
                         f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    info = [line for line in p.stdout.splitlines() if line.startswith("engine ")]
    print(f"    {info[0] if info else engine}\n    {wall:.1f} s", flush=True)
    at_once = re.search(r"(\d+) run\(s\) at a time", info[0]) if info else None
    return wall, int(at_once.group(1)) if at_once else 1


def timed(plan, out, engine, **kw) -> float:
    from cifarlab.sweep import run_sweep
    t0 = time.perf_counter()
    result = run_sweep(plan, out, engine=engine, progress=False, log=lambda s: None, **kw)
    wall = time.perf_counter() - t0
    assert len(result.trained) == len(plan) and not result.failed, (result.failed, len(result.trained))
    print(f"    {wall:.1f} s", flush=True)
    return wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=12, help="runs in the sweep (rounded up to whole seeds x poolings)")
    ap.add_argument("--epochs", type=int, default=15, help="epochs per run (short runs)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of each timing; medians are reported")
    ap.add_argument("--classes", default="0,55,58")
    ap.add_argument("--model", default="template", choices=["template", "improved"])
    ap.add_argument("--gpus-per-run", type=float, default=None)
    ap.add_argument("--skip-single", action="store_true", help="skip the one-run comparison")
    ap.add_argument("--dry-run", action="store_true",
                    help="a smoke test: two training steps a run, 2 runs, 1 round, no one-run comparison")
    args = ap.parse_args(argv)

    import torch

    from cifarlab.config import POOLINGS
    from cifarlab.sweep import import_ray, make_sweep

    runs = 2 if args.dry_run else max(1, args.runs)
    poolings = list(POOLINGS[:2] if args.dry_run else POOLINGS)
    seeds = math.ceil(runs / len(poolings))
    plan = make_sweep(args.classes, [args.model], poolings, seeds, args.epochs, dry_run=args.dry_run)
    single = make_sweep(args.classes, [args.model], ["max"], [100], args.epochs, dry_run=args.dry_run)
    warmup = make_sweep(args.classes, [args.model], poolings[:2], [1000], 1, dry_run=True)
    spec = ["--classes", args.classes, "--models", args.model, "--epochs", str(args.epochs)] + \
        (["--dry-run"] if args.dry_run else [])
    sweep_args = spec + ["--poolings", *poolings, "--seeds", str(seeds)]
    single_args = spec + ["--poolings", "max", "--seeds", "1"]
    ray_extra = ["--gpus-per-run", str(args.gpus_per_run)] if args.gpus_per_run is not None else []
    ray_kw = {"gpus_per_run": args.gpus_per_run} if args.gpus_per_run is not None else {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    from cifarlab.hardware import cpu_name
    machine = f"{cpu_name()}, {cores} cores" + (f", GPU {gpu}" if gpu else "")
    print(f"machine: {machine}; torch {torch.__version__}, {torch.get_num_threads()} threads by default; {load()}")
    print(f"sweep: {plan.describe()}, {args.epochs} epochs each" + (" (dry run)" if args.dry_run else ""))

    ray = import_ray(True)

    def warm(plan_, out: Path, engine: str, at_once: int) -> float:
        if engine == "local":
            timed(warmup, out / "warmup", "local")
            return timed(plan_, out / "sweep", "local")
        ray.init(address="local", num_cpus=cores, include_dashboard=False, logging_level="warning")
        try:   # an earlier sweep leaves `at_once` warm workers
            timed(warmup, out / "warmup", "ray", cpus_per_run=max(1, cores // at_once), **ray_kw)
            return timed(plan_, out / "sweep", "ray", **ray_kw)
        finally:
            ray.shutdown()

    repeats = 1 if args.dry_run else max(1, args.repeats)
    t = {key: [] for key in ("local", "ray", "warm-local", "warm-ray", "one-local", "one-ray", "one-warm-local",
                             "one-warm-ray")}
    k = 1
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        tmp = Path(tmp)
        for r in range(repeats):
            print(f"round {r + 1}/{repeats}: {len(plan)} runs, command line, local", flush=True)
            t["local"].append(cli(sweep_args, tmp / f"local{r}", "local", len(plan))[0])
            print(f"round {r + 1}/{repeats}: {len(plan)} runs, command line, ray", flush=True)
            wall, k = cli(sweep_args, tmp / f"ray{r}", "ray", len(plan), ray_extra)
            t["ray"].append(wall)
            print(f"round {r + 1}/{repeats}: {len(plan)} runs, warm, local", flush=True)
            t["warm-local"].append(warm(plan, tmp / f"warm-local{r}", "local", 1))
            print(f"round {r + 1}/{repeats}: {len(plan)} runs, warm, ray", flush=True)
            t["warm-ray"].append(warm(plan, tmp / f"warm-ray{r}", "ray", k))
        for r in range(0 if args.dry_run or args.skip_single else repeats):
            print(f"round {r + 1}/{repeats}: 1 run, command line, local", flush=True)
            t["one-local"].append(cli(single_args, tmp / f"one-local{r}", "local", 1)[0])
            print(f"round {r + 1}/{repeats}: 1 run, command line, ray", flush=True)
            t["one-ray"].append(cli(single_args, tmp / f"one-ray{r}", "ray", 1, ray_extra)[0])
            print(f"round {r + 1}/{repeats}: 1 run, warm, local", flush=True)
            t["one-warm-local"].append(warm(single, tmp / f"one-warm-local{r}", "local", 1))
            print(f"round {r + 1}/{repeats}: 1 run, warm, ray", flush=True)
            t["one-warm-ray"].append(warm(single, tmp / f"one-warm-ray{r}", "ray", 1))
    m = {key: statistics.median(v) for key, v in t.items() if v}
    n = len(plan)
    rpm = lambda s, runs=n: 60 * runs / s
    show = lambda key: f"{m[key]:.1f} s (" + ", ".join(f"{x:.1f}" for x in t[key]) + ")"
    print(f"\n{n} runs from the command line: local {show('local')}, ray {show('ray')}")
    print(f"{n} runs, warm: local {show('warm-local')}, ray {show('warm-ray')}: ray vs local "
          f"{m['warm-local'] / m['warm-ray']:.2f}x ({rpm(m['warm-ray']):.1f} vs {rpm(m['warm-local']):.1f} runs/min)")
    if "one-ray" in m:
        print(f"1 run from the command line: local {show('one-local')}, ray {show('one-ray')}: ray vs local "
              f"{m['one-local'] / m['one-ray']:.2f}x")
        print(f"1 run, warm: local {show('one-warm-local')}, ray {show('one-warm-ray')}: ray vs local "
              f"{m['one-warm-local'] / m['one-warm-ray']:.2f}x")
    print(f"{load()}")
    print(f"machine: {machine}")
    a, b = rpm(m["ray"]), rpm(m["local"])
    print(f"sweep throughput ray vs local: {a / b:.2f}x ({a:.1f} vs {b:.1f} runs/min, {n} runs, {k} workers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
