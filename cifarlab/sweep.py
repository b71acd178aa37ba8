"""Sweeps: many runs - class subsets x models x poolings x seeds (x recipe overrides) - on this
machine (engine ``local``) or as Ray tasks (engine ``ray``), each one the same :func:`cifarlab.experiment.run`
the notebooks call, each leaving the same run record. What each option does, and why: docs/sweeps.md.
"""
from __future__ import annotations

import difflib
import itertools
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import POOLINGS, PRESETS, RunConfig, check_range, coerce, notebook_config
from .errors import CifarlabError
from .ownnet import is_own

ENGINES = ("local", "ray")
DEFAULT_RETRIES = 2           # a run whose worker dies is tried at most 1 + this many times
DEFAULT_GPU_SHARE = 0.25      # on a cluster with GPUs, four small runs share one GPU
# Set before Ray is imported for a local Ray (or a cluster on 127.0.0.1): every Ray process then
# binds and connects on 127.0.0.1 only, and no token file is written to ~/.ray.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
                "RAY_USAGE_STATS_ENABLED": "0"}
NO_RAY = ("--engine ray needs Ray, which is not installed: pip install 'cifarlab[ray]' (or: pip install ray); "
          "or use --engine local")
# What a sweep sets by its own options, so never through overrides.
_OWN_FIELDS = {"classes": "classes", "model": "models", "pooling": "poolings", "seed": "seeds", "epochs": "epochs",
               "dry_run": "dry_run", "device": "device"}


class SweepError(CifarlabError, ValueError):
    """The sweep cannot start as asked (a bad spec, engine, address or resource); nothing was trained."""


# --- the plan ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sweep:
    """The runs of a sweep, every config checked: the product of class subsets x models x override
    variants x poolings x seeds, in that order, without duplicates."""

    configs: tuple[RunConfig, ...]

    def experiments(self) -> dict[str, list[RunConfig]]:
        """experiment_id -> its configs, in plan order (one experiment per class subset and split)."""
        out: dict[str, list[RunConfig]] = {}
        for c in self.configs:
            out.setdefault(c.experiment_id, []).append(c)
        return out

    def describe(self) -> str:
        exps = self.experiments()
        names = ", ".join(cs[0].experiment_name for cs in exps.values())
        models = ", ".join(dict.fromkeys(c.net_name for c in self.configs))
        pools = ", ".join(dict.fromkeys(c.pooling for c in self.configs))
        seeds = len({c.seed for c in self.configs})
        return (f"{len(self.configs)} runs: {len(exps)} experiment{'s' if len(exps) > 1 else ''} ({names}) x "
                f"{models} x {pools} x {seeds} seed{'s' if seeds > 1 else ''}")

    def __len__(self) -> int:
        return len(self.configs)


def _subsets(classes) -> list:
    """A list of class subsets. A string, or a list of ids only, is one subset (None: the config's default)."""
    if isinstance(classes, str) or not hasattr(classes, "__iter__"):
        return [classes]
    classes = list(classes)
    if classes and all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return [tuple(classes)]
    return classes


def _names(values) -> list:
    """``["improved template"]``, ``"stride,max"``, one name or a list -> names, each once, in order. Your own net -
    a class, or ``FILE.py:CLASS`` - is kept as it is."""
    if values is None:
        return []
    if isinstance(values, str) or is_own(values) or not hasattr(values, "__iter__"):
        values = [values]
    out: list = []
    for v in values:
        for name in [v] if isinstance(v, type) else re.split(r"[,\s]+", str(v).strip()):
            name = name if is_own(name) else name.lower()
            if name and name not in out:
                out.append(name)
    return out


def _variants(overrides, say, terms: str) -> list[dict]:
    """``{"lr": [0.05, 0.1], "dropout": 0.2}`` -> one dict per combination (a list value is a dimension)."""
    if overrides is not None and not isinstance(overrides, dict):
        raise SweepError(f"{say('overrides', repr(overrides))}: expected a mapping of config fields to values, "
                         f"e.g. {{\"lr\": 0.05}} (a list of values makes one run per value)")
    overrides = dict(overrides or {})
    for key in overrides:
        # a notebook and make have no options of their own for a dry run or the device: OVERRIDES sets them
        if key in _OWN_FIELDS and not (terms != "cli" and key in ("dry_run", "device")):
            raise SweepError(f"set {key} with {say(_OWN_FIELDS[key])}, not as a recipe override")
    keys = list(overrides)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in overrides.values()]
    for k, v in zip(keys, values):
        if not v:
            raise SweepError(f"the override {k} has no value: nothing would run")
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def plan_runs(classes, models=("improved", "template"), poolings=POOLINGS, seeds=2, epochs=None,
              template_epochs=None, overrides=None, *, dry_run: bool = False, device=None,
              terms: str = "notebook") -> list[RunConfig]:
    """The runs to train for one class selection, in order: models x override variants x poolings x seeds.

    The one planner of runs, for ``make run-all``, sweeps (one plan per class subset) and a notebook's grid;
    ``precision="auto"`` is decided here, once, for this machine (:func:`_planned`). A bad spec is one
    :class:`SweepError` (or ConfigError) before any data loads, naming the option as the caller spells it
    (``terms``: ``"cli"`` for ``--seeds``, ``"make"`` or ``"notebook"`` for ``SEEDS``). ``seeds``: a count N
    (seeds 0..N-1) or a list; ``template_epochs``: for template runs when ``epochs`` is not given;
    ``overrides``: any other config field, a list of values making a dimension (``{"lr": [0.05, 0.1]}``)."""
    def say(name, value=None):   # an option as the caller writes it: --seeds 0 on the command line, else SEEDS=0
        if terms == "cli":
            return f"--{name.replace('_', '-')}" + ("" if value is None else f" {value}")
        return name.upper() + ("" if value is None else f"={value}")

    models, poolings = _names(models), _names(poolings)
    for what, names, choices, own in (("model", models, sorted(PRESETS), ", or your own net as FILE.py:CLASS"),
                                      ("pooling", poolings, POOLINGS, "")):
        unknown = [f"{n}" + "".join(f" (did you mean {c}?)" for c in difflib.get_close_matches(str(n), choices, n=1))
                   for n in names if n not in choices and not (own and is_own(n))]
        if unknown:
            raise SweepError(f"{say(what + 's')}: unknown {what}(s) {', '.join(unknown)}: choose from "
                             f"{', '.join(choices)}{own}")
    # through the config's coercion: papermill, make or a hand-edited cell may give "2"
    if hasattr(seeds, "__iter__") and not isinstance(seeds, str):
        seeds = list(dict.fromkeys(coerce(say("seeds"), s, int) for s in seeds))
    else:   # a count: seeds 0..N-1
        n = coerce(say("seeds"), seeds, int)
        if n < 1:
            raise SweepError(f"{say('seeds', n)}: nothing would run; give at least 1 seed")
        seeds = list(range(n))
    if any(s < 0 for s in seeds):
        raise SweepError(f"{say('seeds', seeds)}: a seed is a whole number >= 0")
    empty = [say(what) for what, v in (("models", models), ("poolings", poolings), ("seeds", seeds)) if not v]
    if empty:
        raise SweepError(f"{' and '.join(empty)} name{'s' if len(empty) == 1 else ''} nothing: nothing would run "
                         f"(the runs are the product of models x poolings x seeds)")
    def checked_epochs(name, value):   # EPOCHS / TEMPLATE_EPOCHS, under the names the caller gave them
        n = coerce(say(name), value, int)
        return check_range("epochs", n, say(name, n))
    epochs = None if epochs is None else checked_epochs("epochs", epochs)
    template_epochs = None if template_epochs is None else checked_epochs("template_epochs", template_epochs)
    variants = _variants(overrides, say, terms)
    configs: dict[str, RunConfig] = {}
    for model in models:
        ep = epochs if epochs is not None else (template_epochs if model == "template" else None)
        for variant in variants:
            for pooling in poolings:
                for seed in seeds:
                    cfg = notebook_config(model, classes, pooling, seed, ep, variant,
                                          dry_run=True if dry_run else None, device=device)
                    configs.setdefault(cfg.run_id, cfg)
    return [_planned(c) for c in configs.values()]


def make_sweep(classes=None, models=("improved", "template"), poolings=POOLINGS, seeds=2, epochs=None,
               template_epochs=None, overrides=None, dry_run: bool = False, device=None) -> Sweep:
    """:func:`plan_runs` for each class subset, as one :class:`Sweep` without duplicates. ``classes``: a list
    of class subsets, each ids, names or a superclass (``["0,55,58", "vehicles_1"]``); a single string or a
    tuple of ids is one subset. Errors name the command line's options (``--seeds``)."""
    subsets = _subsets(classes)
    if not subsets:
        raise SweepError("--classes names nothing: nothing would run (the runs are the product of class subsets x "
                         "models x poolings x seeds)")
    configs: dict[str, RunConfig] = {}
    for subset in subsets:
        for cfg in plan_runs(subset, models, poolings, seeds, epochs, template_epochs, overrides, dry_run=dry_run,
                             device=device, terms="cli"):
            configs.setdefault(cfg.run_id, cfg)
    return Sweep(tuple(configs.values()))


def _planned(cfg: RunConfig) -> RunConfig:
    """``precision="auto"`` resolved for this machine's device. On a cluster of other devices, say the precision
    (``--set precision=bf16``); a device only the workers have means fp32."""
    if cfg.precision != "auto":
        return cfg
    from .hardware import resolve_config
    try:
        return resolve_config(cfg)[0]
    except CifarlabError:       # a device this machine lacks (only the workers have it)
        return cfg.replace(precision="fp32")


# --- one run, wherever it runs -----------------------------------------------------------------------
WORK_PREFIX = "cifarlab-run-"


def _remove_stale_work() -> None:
    """Remove the temporary folders of runs whose process is gone (a worker killed mid-run cannot
    remove its own): ``cifarlab-run-<pid>-*`` whose pid no longer exists."""
    for d in Path(tempfile.gettempdir()).glob(f"{WORK_PREFIX}*-*"):
        pid = d.name[len(WORK_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists() and d.is_dir():
            shutil.rmtree(d, ignore_errors=True)


def execute_run(cfg: RunConfig, subset=None, data_dir=None, threads: int | None = None, backbone=None) -> dict:
    """Train ``cfg`` with :func:`cifarlab.experiment.run` into a fresh temporary folder (the worker's
    own disk) and return the record's files as bytes, with where and how it ran. A diverged run comes
    back as its diverged record. The temporary folder is removed whatever happens. ``backbone``: the
    pretrained backbone a run with ``pretrain_epochs`` starts from, made by the driver."""
    import torch

    from .engine import TrainingDiverged
    from .experiment import run

    if threads:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    if Path("/proc/self").exists():
        _remove_stale_work()
    tmp = tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-")
    try:
        status, error = "ok", None
        try:
            path = run(cfg, out=tmp, subset=subset, data_dir=data_dir, live="none", force=True,
                       backbone=backbone).path
        except TrainingDiverged as e:
            status, error, path = "diverged", e.result.diverged, e.record
        files = {p.name: p.read_bytes() for p in sorted(Path(path).iterdir()) if p.is_file()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"run_id": cfg.run_id, "status": status, "error": error, "files": files,
            "seconds": time.perf_counter() - t0, "host": socket.gethostname(), "pid": os.getpid(),
            "threads": torch.get_num_threads()}


def cifarlab_run(cfg_dict: dict, subset, data_dir, threads: int, net=None, backbone=None) -> dict:
    """The Ray task (its workers show as ``ray::cifarlab_run`` in ps): :func:`execute_run` on a worker.
    ``net``: a student's own net as :func:`cifarlab.ownnet.portable` gives it, registered here first."""
    if net is not None:
        from .ownnet import NetError, register
        if register(net, len(cfg_dict["classes"]), cfg_dict["pooling"], "cpu")[2] != cfg_dict["net"]:
            raise NetError(f"{cfg_dict['model']} on this worker is not the net the sweep planned (its file changed "
                           f"since, or differs on this node); run the sweep again")
    import ray
    payload = execute_run(RunConfig.from_dict(cfg_dict), subset, data_dir, threads, backbone)
    payload["node"] = ray.get_runtime_context().get_node_id()
    return payload


def publish_record(out, cfg: RunConfig, payload: dict):
    """Write a record that came back from a worker into ``out`` (checked by :func:`run_sweep`), atomically, and
    return it as read back (how, and why: docs/sweeps.md, "Where records land")."""
    from .files import building, publish_dir, user_path
    from .records import RECORD, RECORD_MARKER, RecordError, load_record, record_target

    files = payload["files"]
    foreign = sorted(n for n in files if n not in RECORD.allowed)
    if foreign or RECORD_MARKER not in files:
        raise RecordError(f"the worker sent back a run record of {cfg.title} with unexpected files "
                          f"({', '.join(foreign) or 'no ' + RECORD_MARKER}); nothing was written")
    out = user_path(out, "--out")     # a public function: "~/runs" is the user's, not a folder named "~"
    with building(out, cfg.run_name) as tmp:
        for name in sorted(files, key=lambda n: n == RECORD_MARKER):   # the marker last
            (tmp / name).write_bytes(files[name])
        staged = load_record(tmp)
        if staged.config.identity() != cfg.identity():
            raise RecordError(f"the worker sent back a record of another run than {cfg.run_name}; nothing was "
                              f"written")
        staged.path = publish_dir(tmp, record_target(out, cfg, staged.ok), RECORD)
    return staged


# --- engines -------------------------------------------------------------------------------------------
def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class LocalEngine:
    """One run after another in this process."""

    def __init__(self, cpus_per_run=None):
        if cpus_per_run is not None and cpus_per_run > _cores():   # Ray refuses more than a node has: so do we
            raise SweepError(f"--cpus-per-run {cpus_per_run:g}, but this machine has {_cores()} cores available "
                             f"to this process: give at most {_cores()}")
        self.threads = None if cpus_per_run is None else max(1, int(cpus_per_run))
        self.workers = 1

    def describe(self) -> str:
        import torch
        return (f"engine local: one run at a time in this process, {self.threads or torch.get_num_threads()} "
                f"torch thread(s)")

    def start(self, configs) -> None:
        pass

    def put(self, subset):
        return subset

    def execute(self, jobs, on_result):
        """``jobs``: [(cfg, subset, data_dir, backbone)]; ``on_result(cfg, payload_or_None, error_or_None)``."""
        import torch
        before = torch.get_num_threads()
        try:
            for cfg, subset, data_dir, backbone in jobs:
                try:
                    payload = execute_run(cfg, subset, data_dir, self.threads, backbone)
                except Exception as e:   # a run that raised: no record; the sweep goes on
                    on_result(cfg, None, f"{type(e).__name__}: {e}")
                    continue
                on_result(cfg, payload, None)
        finally:
            torch.set_num_threads(before)

    def stop(self) -> None:
        pass


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        import ipaddress
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_address(address: str, option: str) -> tuple[str, int] | None:
    """``host:port`` (or ``ray://host:port``) -> (host, port); ``auto`` -> None; else a SweepError."""
    if address == "auto":
        return None
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    m = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})", hostport)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise SweepError(f"{option} {address!r} is not a Ray cluster address: give HOST:PORT of its head node "
                         f"(e.g. 10.0.0.5:6379, what `ray start --head` prints), or 'auto'")
    return m.group(1).strip("[]"), int(m.group(2))


def import_ray(loopback: bool):
    """Import Ray; for a local (or loopback) Ray, set :data:`LOOPBACK_ENV` first - Ray reads it once, at import."""
    if sys.modules.get("ray") is not None:
        import ray
        # What Ray read at its import: its documented variable (cifarlab sets it only before importing Ray).
        wide = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1").lower() in ("1", "true")
        if not ray.is_initialized() and wide == loopback:
            raise SweepError(
                "Ray was imported in this process before cifarlab could make it listen on 127.0.0.1 only, so a "
                "local Ray would open ports on this machine's network address. Restart (the kernel) and run the "
                "sweep before importing ray, or set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing it"
                if loopback else
                "Ray was set up in this process for a local (127.0.0.1-only) Ray, which cannot join a cluster on "
                "another machine; restart (the kernel) and run the cluster sweep first")
    elif loopback:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        for k, v in LOOPBACK_ENV.items():
            os.environ.setdefault(k, v)
    try:
        import ray
    except ImportError:
        raise SweepError(NO_RAY) from None
    return ray


def _check_ray_tmpdir() -> None:
    """A local Ray puts Unix sockets under $RAY_TMPDIR (else $TMPDIR, else /tmp):
    <tmp>/ray/session_<date>_<time>_<pid>/sockets/plasma_store, and a socket path has at most 107 bytes
    (103 on macOS). Too long a folder is one line here, not a traceback from inside Ray."""
    from .files import user_path
    var = next((v for v in ("RAY_TMPDIR", "TMPDIR") if os.environ.get(v)), None)
    tmp = user_path(os.environ[var], f"${var}") if var else Path("/tmp")
    if var == "RAY_TMPDIR":
        os.environ[var] = str(tmp)    # Ray does not expand ~
    limit = (103 if sys.platform == "darwin" else 107) - len("/ray/session_2025-01-01_00-00-00_000000_4194304"
                                                             "/sockets/plasma_store")
    if len(os.fsencode(str(tmp))) > limit:
        raise SweepError(f"${var} {tmp} is too long for a local Ray: its socket paths under it would pass the "
                         f"system's limit; set RAY_TMPDIR to a folder of at most {limit} bytes (e.g. /tmp/ray-$USER)")


class RayEngine:
    """Runs as Ray tasks: a local Ray started here, a cluster joined by address, or the Ray runtime this
    process already initialized."""

    def __init__(self, address=None, cpus_per_run=None, gpus_per_run=None, retries=DEFAULT_RETRIES):
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.option = "--address" if address else "$RAY_ADDRESS"
        # (host, port) of the cluster; None: a local Ray, or "auto"
        self.hostport = _split_address(self.address, self.option) if self.address else None
        self.loopback = self.hostport is None or _is_loopback(self.hostport[0])
        whole_or_fraction = gpus_per_run is not None and (gpus_per_run <= 1 or float(gpus_per_run).is_integer())
        if gpus_per_run is not None and not (gpus_per_run >= 0 and whole_or_fraction):
            raise SweepError(f"--gpus-per-run {gpus_per_run}: give a fraction of one GPU (0 to 1) or a whole number")
        self.cpus_per_run, self.gpus_per_run, self.retries = cpus_per_run, gpus_per_run, retries
        self.ray = None
        self.owned = False          # whether this sweep called ray.init (and so calls ray.shutdown)
        self._pending = []

    # -- start / connect -------------------------------------------------------------------------------
    def check(self) -> None:
        """Before any data is loaded: Ray's socket paths short enough, Ray importable, the address answering (a
        plain TCP connect, to fail fast: Ray itself retries for about 14 minutes)."""
        if not self.address:
            _check_ray_tmpdir()
        self.ray = import_ray(self.loopback)
        if self.hostport and not self.ray.is_initialized():
            try:
                socket.create_connection(self.hostport, timeout=3).close()
            except OSError as e:
                why = e.strerror or type(e).__name__
                raise SweepError(f"no Ray cluster answers at {self.address} ({self.option}): {why}. Start its head "
                                 f"node (ray start --head) or fix the address; without an address, --engine ray "
                                 f"starts a local Ray on this machine") from None

    def start(self, configs) -> None:
        ray = self.ray
        t0 = time.perf_counter()
        if ray.is_initialized():
            self.how = "the Ray runtime already initialized in this process"
        else:
            kw = dict(include_dashboard=False, configure_logging=True, logging_level="warning")
            try:
                if self.address:
                    ray.init(address=self.address, **kw)
                    self.how = f"the Ray cluster at {self.address}"
                else:
                    ray.init(address="local", num_cpus=_cores(), **kw)
                    self.how = "a local Ray on 127.0.0.1"
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise SweepError(f"could not join Ray at {self.address or 'a new local instance'}: "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
            self.owned = True
        self.start_seconds = time.perf_counter() - t0
        try:
            self._size(len(configs))
            cuda = sorted({c.device for c in configs if c.device.startswith("cuda")})
            if cuda and not self.gpus:
                raise SweepError(f"--device {cuda[0]}, but the runs get no GPU ({self.how} has "
                                 f"{self.resources.split(', ')[-1]}, --gpus-per-run {self.gpus:g}); use --device auto")
        except BaseException:
            self.stop()
            raise

    def _size(self, n_runs: int) -> None:
        nodes = [n["Resources"] for n in self.ray.nodes() if n.get("Alive")]
        cpus = [r.get("CPU", 0.0) for r in nodes]
        gpus = [r.get("GPU", 0.0) for r in nodes]
        total_cpu, total_gpu = sum(cpus), sum(gpus)
        gpr = self.gpus_per_run
        if gpr is None:
            gpr = DEFAULT_GPU_SHARE if total_gpu else 0.0
        if gpr and gpr > max(gpus):
            raise SweepError(f"--gpus-per-run {gpr:g}, but " + (f"no node of {self.how} has a GPU" if not total_gpu
                             else f"its largest node has {max(gpus):g} GPU(s)"))
        cpr = self.cpus_per_run
        if cpr is None:   # share the CPUs out, at least one per run; GPU runs need one CPU to feed them
            cpr = 1.0 if gpr else float(max(1, min(max(cpus), math.floor(total_cpu / max(1, n_runs)))))
        if cpr > max(cpus):   # a cluster without CPUs included
            raise SweepError(f"--cpus-per-run {cpr:g}, but the largest node of {self.how} has {max(cpus):g} CPUs: "
                             f"no run could start")
        self.cpus, self.gpus, self.threads = cpr, gpr, max(1, int(cpr))
        slots = sum(min(math.floor(c / cpr + 1e-9), math.floor(g / gpr + 1e-9) if gpr else math.inf)
                    for c, g in zip(cpus, gpus))
        self.workers = int(max(1, min(slots, n_runs)))
        self.resources = f"{len(nodes)} node(s), {total_cpu:g} CPUs, {total_gpu:g} GPUs"

    def describe(self) -> str:
        gpu = f", {self.gpus:g} GPU" if self.gpus else ""
        threads = f"{self.threads} torch thread{'s' if self.threads > 1 else ''}"
        return (f"engine ray: {self.how} ({self.resources}, ready in {self.start_seconds:.1f} s); "
                f"{self.workers} run(s) at a time, each {self.cpus:g} CPU ({threads}){gpu}, retried up to "
                f"{self.retries} time(s) if its worker dies")

    def put(self, subset):
        return self.ray.put(subset)

    # -- run -------------------------------------------------------------------------------------------
    def execute(self, jobs, on_result):
        from .ownnet import portable
        ray = self.ray
        task = ray.remote(cifarlab_run).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries,
                                                retry_exceptions=False)
        by_ref = {}
        for cfg, subset, data_dir, backbone in jobs:
            net = portable(cfg.net) if cfg.net else None     # a student's net travels with its runs
            by_ref[task.remote(cfg.to_dict(), subset, data_dir, self.threads, net, backbone)] = cfg
        self._pending = list(by_ref)

        def collect(ref):
            cfg = by_ref.pop(ref)
            try:
                payload = ray.get(ref)
            except ray.exceptions.RayTaskError as e:     # the run raised inside the task
                cause = getattr(e, "cause", None)
                msg = f"{type(cause).__name__}: {cause}" if cause is not None else str(e).splitlines()[-1]
                on_result(cfg, None, msg)
            except ray.exceptions.RayError as e:         # its worker or node died more often than retried
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                on_result(cfg, None, f"{type(e).__name__} after {1 + self.retries} attempt(s): {first}")
            else:
                on_result(cfg, payload, None)

        try:
            while self._pending:
                done, self._pending = ray.wait(self._pending, num_returns=1)
                for ref in done:
                    collect(ref)
        except KeyboardInterrupt:
            # keep what finished meanwhile, then cancel the rest (stop() shuts down a Ray we started)
            done, self._pending = ray.wait(self._pending, num_returns=len(self._pending), timeout=0) \
                if self._pending else ([], [])
            for ref in done:
                collect(ref)
            raise

    def stop(self) -> None:
        ray = self.ray
        for ref in self._pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass
        self._pending = []
        if self.owned and ray.is_initialized():
            ray.shutdown()
            self.owned = False


# --- results -----------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """What a sweep left: its records (trained now or reused), what diverged or failed, and the comparisons."""

    out: Path
    sweep: Sweep
    engine: str
    workers: int
    records: dict = field(default_factory=dict)       # run_id -> Record (ok or diverged), plan order
    failed: dict = field(default_factory=dict)        # run_id -> why no record
    runs: dict = field(default_factory=dict)          # run_id -> where/how it ran (host, pid, node, seconds)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def diverged(self) -> list:
        return [r for r in self.records.values() if r.diverged]

    @property
    def trained(self) -> list:
        """run_ids trained by this call."""
        return list(self.runs)

    @property
    def reused(self) -> list:
        """run_ids whose records were already there."""
        return [run_id for run_id, rec in self.records.items() if rec.reused]

    def comparisons(self) -> list:
        """One :class:`cifarlab.comparison.Comparison` per experiment of the sweep (all its records in
        ``out``), or the reason it has none (a string)."""
        from .comparison import compare
        from .records import find_records
        out, records = [], None
        for exp_id, cfgs in self.sweep.experiments().items():
            if all(c.dry_run for c in cfgs):
                out.append(f"{cfgs[0].experiment_name}: dry-run records are not compared")
                continue
            if not any(c.run_id in self.records for c in cfgs):
                out.append(f"{cfgs[0].experiment_name}: no records, nothing to compare")
                continue
            try:
                records = find_records(self.out) if records is None else records   # read the folder once
                out.append(compare(self.out, cfgs[0].experiment_name, records))
            except CifarlabError as e:
                out.append(f"{cfgs[0].experiment_name}: {e}")
        return out

    def header(self) -> str:
        div = f", {len(self.diverged)} diverged" if self.diverged else ""
        fail = f", {len(self.failed)} FAILED (no record)" if self.failed else ""
        stop = " - interrupted" if self.interrupted else ""
        rate = f" ({60 * len(self.trained) / self.seconds:.1f} runs/min)" if self.trained else ""
        return (f"sweep {self.sweep.describe()}{stop}\n{len(self.trained)} trained in {self.seconds:.1f} s{rate} "
                f"on {self.engine} ({self.workers} at a time), {len(self.reused)} reused{div}{fail}; records in "
                f"{self.out}")

    def report(self) -> str:
        """Everything a person reads: per experiment its comparison, then (several subsets) the answer across them."""
        from .comparison import Comparison
        comparisons = self.comparisons()
        parts = [self.header()]
        for cfg_id, why in self.failed.items():
            cfg = next(c for c in self.sweep.configs if c.run_id == cfg_id)
            parts.append(f"FAILED, no record: {cfg.title} on {cfg.experiment_name}: {why}")
        for c in comparisons:   # each as `python -m cifarlab compare` prints it, or why there is none
            parts.append(f"=== {c.experiment.name} ===\n{c.report()}" if isinstance(c, Comparison) else f"=== {c}")
        if sum(isinstance(c, Comparison) for c in comparisons) > 1:   # several subsets: is the answer general?
            from .subsets import across_subsets
            parts.append("Across subsets, pooled (notebook 04_across_subsets):\n" + across_subsets(self.out).report())
        return "\n\n".join(parts)


# --- running a sweep -----------------------------------------------------------------------------------
def _line(i: int, n: int, cfg: RunConfig, payload, error, record=None) -> str:
    """The line a finished run prints: what it scored, or why it has no record; where it ran."""
    head = f"[{i}/{n}] {cfg.net_name}/{cfg.pooling} seed {cfg.seed} on {cfg.experiment_name}"
    if error is not None:
        return f"{head}: FAILED, no record - {error}"
    where = (f"{payload['seconds']:.1f} s, pid {payload['pid']} on {payload['host']}"
             + (f" node {payload['node'][:8]}" if payload.get("node") else "") + f", {payload['threads']} thread(s)")
    if payload["status"] != "ok":
        return f"{head}: DIVERGED ({payload['error']}) - recorded as diverged ({where})"
    m = record.metrics
    val = "-" if m.get("val_acc") is None else f"{m['val_acc']:.4f}"
    return f"{head}: test acc {m['test_acc']:.4f}, val acc {val}, {m['train_seconds']:.1f} s training ({where})"


def run_sweep(sweep: Sweep, out="sweep", *, engine: str = "local", address=None, cpus_per_run=None,
              gpus_per_run=None, retries: int = DEFAULT_RETRIES, force: bool = False, data_dir=None,
              worker_data_dir=None, progress: bool = True, log=None) -> SweepResult:
    """Run every run of ``sweep`` whose record is not in ``out`` yet (all of them with ``force``).

    Everything that can be checked is checked first, then each class subset is loaded once, then runs are
    submitted. A run that ends without a record is in ``.failed`` of the :class:`SweepResult`; Ctrl-C raises
    KeyboardInterrupt after the finished records are written and the rest cancelled."""
    from .data import check_data_dir, subset_for
    from .files import check_writable_dir
    from .liveview import make_view
    from .pretrain import backbone_config, check_pretraining_data, get_backbone
    from .records import reusable_record

    log = log or (lambda s: print(s, flush=True))
    if engine not in ENGINES:
        raise SweepError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if cpus_per_run is not None and not (cpus_per_run > 0 and math.isfinite(cpus_per_run)):
        raise SweepError(f"--cpus-per-run {cpus_per_run}: give a finite number > 0 (at most the cores of a node)")
    if retries < 0:
        raise SweepError(f"--retries {retries}: give 0 or more")
    out = check_writable_dir(out, "--out")
    check_data_dir(data_dir)
    check_pretraining_data(sweep.configs, data_dir)
    if engine == "local":
        for option, value in (("--address", address), ("--gpus-per-run", gpus_per_run),
                              ("--worker-data-dir", worker_data_dir)):
            if value:
                raise SweepError(f"{option} is for Ray's workers (a cluster, shared GPUs, their own data): it needs "
                                 f"--engine ray")
        runner = LocalEngine(cpus_per_run)
    else:
        runner = RayEngine(address, cpus_per_run, gpus_per_run, retries)

    result = SweepResult(out, sweep, engine, 1)
    todo = []
    for cfg in sweep.configs:   # every record's place checked, whatever force says, before anything runs
        existing = reusable_record(out, cfg, force, log)
        if existing is not None:
            result.records[cfg.run_id] = existing
        else:
            todo.append(cfg)
    log(f"sweep: {sweep.describe()} -> {out}")
    if result.reused:
        log(f"skipped {len(result.reused)} run(s) already recorded in {out} (same identity; --force retrains them)")
    if not todo:
        log("nothing to train")
        return result
    if engine == "ray":
        ray_module = sys.modules.get("ray")
        if (len(todo) == 1 and not runner.address and not gpus_per_run
                and not (ray_module is not None and ray_module.is_initialized())):
            # One run on this machine: starting a local Ray (~8 s with its workers' first imports, ~2 s for
            # importing Ray alone) costs more than it can give, and the run computes the same numbers here.
            import importlib.util
            if importlib.util.find_spec("ray") is None:
                raise SweepError(NO_RAY)
            log("one run to do: it trains in this process (starting a local Ray for it would only add time)")
            runner = LocalEngine(cpus_per_run)
        else:
            runner.check()          # before any data is loaded: Ray importable, the address answering

    from tqdm.auto import tqdm
    t0 = time.perf_counter()
    bar = None
    try:
        runner.start(todo)
        result.workers = runner.workers
        log(runner.describe())
        # each class subset loaded once, in the driver (unless workers load their own), and each pretrained
        # backbone made once here (or read from out/backbones), then shipped to their runs
        subsets, backbones, jobs = {}, {}, []
        for c in todo:
            if worker_data_dir is None and c.experiment_id not in subsets:
                subsets[c.experiment_id] = runner.put(subset_for(c, data_dir, verbose=False))
            key = backbone_config(c).run_id if c.pretrain_epochs else None
            if key and key not in backbones:
                backbones[key] = runner.put(get_backbone(c, out, data_dir, make_view("quiet"), log))
            jobs.append((c, subsets.get(c.experiment_id), worker_data_dir, backbones.get(key)))
        bar = tqdm(total=len(sweep), initial=len(result.reused), desc="sweep", unit="run", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        say = bar.write if progress else log

        def on_result(cfg, payload, error):
            if error is None:
                try:
                    rec = publish_record(out, cfg, payload)
                except CifarlabError as e:
                    error = f"{type(e).__name__}: {e}"
                else:
                    result.records[cfg.run_id] = rec
                    result.runs[cfg.run_id] = {k: v for k, v in payload.items() if k != "files"}
            if error is not None:
                result.failed[cfg.run_id] = error
            n_done = len(result.records) + len(result.failed)      # reused ones included
            say(_line(n_done, len(sweep), cfg, payload, error, result.records.get(cfg.run_id)))
            bar.update(1)

        runner.execute(jobs, on_result)
    except KeyboardInterrupt:
        result.interrupted = True
        raise
    finally:
        if bar is not None:
            bar.close()
        runner.stop()
        result.seconds = time.perf_counter() - t0
        result.records = {c.run_id: result.records[c.run_id] for c in sweep.configs if c.run_id in result.records}
    return result


def sweep(classes=None, models=("improved", "template"), poolings=POOLINGS, seeds=2, epochs=None, *,
          template_epochs=None, overrides=None, dry_run=False, device=None, out="sweep", engine="local",
          **run_options) -> SweepResult:
    """:func:`make_sweep` then :func:`run_sweep`: the whole sweep in one call (from a notebook, say)."""
    plan = make_sweep(classes, models, poolings, seeds, epochs, template_epochs, overrides, dry_run, device)
    return run_sweep(plan, out, engine=engine, **run_options)


__all__ = ["Sweep", "SweepResult", "SweepError", "make_sweep", "run_sweep", "sweep", "execute_run",
           "publish_record", "LOOPBACK_ENV", "ENGINES"]
