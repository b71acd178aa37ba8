"""Sweep throughput: the same sweep of short runs through the ``local`` engine and through Ray on this
machine.

    python benchmarks/sweep.py [--runs 12] [--epochs 15] [--classes 0,55,58] [--model template] [--dry-run]

* local - one run at a time in this process, torch using every core (on 2 cores: 1 run x 2 threads,
  in turn);
* ray   - a local Ray started by the sweep (127.0.0.1 only), one run per core at once, one torch thread
  each (on 2 cores: 2 runs x 1 thread); Ray's start, the workers' first imports and its shutdown are
  inside the timing - what a user waits for.

Every run is a complete ``run()`` with its record written (training, final evaluation, figures), on
the classes' shipped sample, into a fresh folder per engine. Then the same for a single run's worth of
work (one run; Ray gives it every core, so it trains with as many threads as the local engine), which
shows Ray's fixed cost. Both sweeps compute the same runs; their numbers differ only in the last bits
(the thread count changes the order of float sums). The last line is

  sweep throughput ray vs local: <r>x (<a> vs <b> runs/min, <n> runs, <k> workers)

On a GPU (CUDA available), both engines train there (``--gpus-per-run``, default 0.25 of a GPU per
Ray task: k runs share the GPU, against one at a time locally).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> str:
    try:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def timed(plan, out, engine, **kw):
    from cifarlab.sweep import run_sweep
    t0 = time.perf_counter()
    result = run_sweep(plan, out, engine=engine, progress=False, log=lambda s: print("   ", s, flush=True), **kw)
    wall = time.perf_counter() - t0
    assert len(result.trained) == len(plan) and not result.failed, (result.failed, len(result.trained))
    return wall, result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=12, help="runs in the sweep (rounded up to whole seeds x poolings)")
    ap.add_argument("--epochs", type=int, default=15, help="epochs per run (short runs)")
    ap.add_argument("--classes", default="0,55,58")
    ap.add_argument("--model", default="template", choices=["template", "improved"])
    ap.add_argument("--gpus-per-run", type=float, default=None)
    ap.add_argument("--skip-single", action="store_true", help="skip the single-run comparison")
    ap.add_argument("--dry-run", action="store_true", help="two training steps a run, 2 runs: a smoke test")
    args = ap.parse_args(argv)

    import torch

    from cifarlab.config import POOLINGS
    from cifarlab.sweep import make_sweep

    runs = 2 if args.dry_run else max(1, args.runs)
    poolings = POOLINGS[:2] if args.dry_run else POOLINGS
    seeds = math.ceil(runs / len(poolings))
    plan = make_sweep(args.classes, [args.model], poolings, seeds, args.epochs, dry_run=args.dry_run)
    single = make_sweep(args.classes, [args.model], ["max"], [100], args.epochs, dry_run=args.dry_run)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    machine = f"{cpu_name()}, {cores} cores" + (f", GPU {gpu}" if gpu else "")
    print(f"machine: {machine}; torch {torch.__version__}, {torch.get_num_threads()} threads by default; {load()}")
    print(f"sweep: {plan.describe()}, {args.epochs} epochs each" + (" (dry run)" if args.dry_run else ""))
    ray_kw = {"gpus_per_run": args.gpus_per_run} if args.gpus_per_run is not None else {}

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        tmp = Path(tmp)
        print("local:", flush=True)
        local_s, _ = timed(plan, tmp / "local", "local")
        print("ray:", flush=True)
        ray_s, ray_result = timed(plan, tmp / "ray", "ray", **ray_kw)
        if not args.skip_single:
            print("single run, local:", flush=True)
            one_local, _ = timed(single, tmp / "one-local", "local")
            print("single run, ray:", flush=True)
            one_ray, _ = timed(single, tmp / "one-ray", "ray", **ray_kw)
    n, k = len(plan), ray_result.workers
    a, b = 60 * n / ray_s, 60 * n / local_s
    print(f"sweep of {n} runs: local {local_s:.1f} s, ray {ray_s:.1f} s (Ray's start and shutdown included); "
          f"{load()}")
    if not args.skip_single:
        print(f"single run: local {one_local:.1f} s, ray {one_ray:.1f} s: ray vs local {one_local / one_ray:.2f}x "
              f"(ray {one_ray - one_local:+.1f} s: its start and shutdown, the worker's first imports, the record "
              f"shipped back)")
    print(f"machine: {machine}")
    print(f"sweep throughput ray vs local: {a / b:.2f}x ({a:.1f} vs {b:.1f} runs/min, {n} runs, {k} workers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
