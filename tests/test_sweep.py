"""Sweeps (issue 18): the plan and its errors, records that come back from workers, a real local Ray
against the local engine, the command line starting its own Ray on 127.0.0.1 and Ctrl-C, and a real
two-node cluster on loopback surviving a killed worker and a removed node.

Everything Ray here is started by these tests and stopped by them (ray.shutdown, cluster.shutdown,
the CLI's own shutdown); nothing else on the machine is touched (no `ray stop`, no pkill). Ray is
told to use 127.0.0.1 only before it is imported (the variables below), and its session files go to
a private temporary folder; `ss` checks that no Ray process listens anywhere else.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Before ray is imported anywhere in this process (Ray reads them at import): loopback only, no token file.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
RAY_TMP = tempfile.mkdtemp(prefix="clray-")   # short: Ray's unix sockets live under it
os.environ["RAY_TMPDIR"] = RAY_TMP
atexit.register(shutil.rmtree, RAY_TMP, True)

import json  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import TINY_NET  # noqa: E402

from cifarlab.cli import main  # noqa: E402
from cifarlab.records import RECORD_FILES, RecordError, load_record, record_path  # noqa: E402
from cifarlab.sweep import execute_run, make_sweep, publish_record, run_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The plan, its errors and a tiny local sweep are in make test's fast tier; every test that starts a Ray
# runtime is marked cluster (make test-all).


# --- helpers: processes, listeners ---------------------------------------------------------------------
def _ppids() -> dict[int, int]:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            out[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _descendants(roots) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppids().items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(children.get(p, []))
    return seen


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _running_tasks(raylet_pids) -> list[int]:
    """Ray workers, children of these raylets, running a sweep task right now (title ray::cifarlab_run)."""
    return [p for p, pp in _ppids().items() if pp in raylet_pids and _cmdline(p).startswith("ray::cifarlab_run")]


def _listeners(pids) -> list[tuple[str, int, str]]:
    """(local address, pid, line) of every TCP/UDP listener that one of ``pids`` holds, from ss -ltunp."""
    if shutil.which("ss") is None:
        if os.environ.get("CIFARLAB_REQUIRE_SS"):
            pytest.fail("ss (iproute2) is missing; CI installs it")
        pytest.skip("ss (iproute2) is not installed: cannot check Ray's listeners")
    out = subprocess.run(["ss", "-ltunpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if len(fields) >= 5 and owners & set(pids):
            found.append((fields[4], min(owners & set(pids)), line))
    return found


def _assert_loopback_only(pids) -> int:
    found = _listeners(pids)
    assert found, "no listener found for the Ray processes: the check would prove nothing"
    wide = [line for addr, _, line in found
            if not re.match(r"^(127\.\d+\.\d+\.\d+|\[::ffff:127\.\d+\.\d+\.\d+\]|\[::1\])(%\w+)?:\d+$", addr)]
    assert not wide, "Ray listens beyond 127.0.0.1:\n" + "\n".join(wide)
    return len(found)


class Cli:
    """``python -m cifarlab ...`` in a subprocess, its output collected line by line as it comes."""

    def __init__(self, args, env, cwd):
        self.proc = subprocess.Popen([sys.executable, "-m", "cifarlab", *args], cwd=cwd, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out, self.err = [], []
        self._threads = [threading.Thread(target=self._read, args=(s, buf), daemon=True)
                         for s, buf in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream, buf):
        for line in stream:
            buf.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.out):
                if re.search(pattern, line):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not printed within {timeout} s (rc {self.proc.poll()}):\n"
                             + self.text())

    def finish(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the sweep did not finish in time:\n" + self.text())
        for t in self._threads:
            t.join(5)
        return rc

    def text(self) -> str:
        return "\n".join(self.out) + "\n--- stderr ---\n" + "\n".join(self.err[-40:])


def _env(**extra) -> dict:
    """The environment of a CLI subprocess: no RAY_* variables of ours (the CLI must set what it needs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg", **extra)
    return env


def _complete_records(out: Path) -> dict:
    recs = {}
    for m in sorted(out.glob("*/metrics.json")):
        rec = load_record(m.parent)
        assert sorted(p.name for p in m.parent.iterdir()) == sorted(RECORD_FILES), m.parent
        recs[rec.config.run_id] = rec
    return recs


def _no_staging_left(out: Path) -> None:
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], sorted(p.name for p in out.iterdir())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the plan and its errors (no Ray started) ---------------------------------------------------------
def test_plan_is_the_product_without_duplicates():
    plan = make_sweep(["0,55", "55,0", "otter,pickup_truck"], ["template", "improved"], "stride,max", 2,
                      epochs=3, overrides={"lr": ["0.01", "0.02"]})
    # "55,0" is the same subset as "0,55": its runs are not planned twice
    assert len(plan) == 2 * 2 * 2 * 2 * 2
    assert len({c.run_id for c in plan.configs}) == len(plan)
    assert {c.classes for c in plan.configs} == {(0, 55), (55, 58)}
    assert {c.lr for c in plan.configs} == {0.01, 0.02} and {c.epochs for c in plan.configs} == {3}
    assert list(plan.experiments()) == [plan.configs[0].experiment_id, plan.configs[-1].experiment_id]
    one = make_sweep((0, 55, 58), ["template"], ["avg"], [4], template_epochs=7)
    assert [(c.classes, c.seed, c.epochs) for c in one.configs] == [((0, 55, 58), 4, 7)]


def test_one_planner_for_a_notebook_grid_make_run_all_and_sweeps(tmp_path):
    from cifarlab.hardware import cpu_bf16_flags
    from cifarlab.sweep import SweepError, plan_runs
    # a notebook's grid: MODELS x POOLINGS x SEEDS for its one class selection, in that order
    plan = plan_runs(["apple", "otter"], ["improved", "template"], ["max", "avg"], [3, 1], template_epochs=5)
    assert [(c.model, c.pooling, c.seed) for c in plan] == [
        (m, p, s) for m in ("improved", "template") for p in ("max", "avg") for s in (3, 1)]
    assert {c.classes for c in plan} == {(0, 55)} and {c.epochs for c in plan} == {30, 5}
    # "auto" is decided here, once, for this machine: the configs are the ones that run and are recorded
    assert {c.precision for c in plan if c.model == "improved"} == {"bf16" if cpu_bf16_flags() else "fp32"}
    # a sweep is this plan for each class subset; the same runs, never planned twice
    sweep = make_sweep(["0,55", "55,0"], ["improved", "template"], ["max", "avg"], [3, 1], template_epochs=5)
    assert list(sweep.configs) == plan
    # errors name the option as the caller writes it
    with pytest.raises(SweepError, match=r"^SEEDS=0: nothing would run"):
        plan_runs("0,55", seeds=0, terms="make")
    with pytest.raises(SweepError, match=r"^--seeds 0: nothing would run"):
        plan_runs("0,55", seeds=0, terms="cli")
    with pytest.raises(SweepError, match=r"^POOLINGS names nothing"):
        plan_runs("0,55", poolings=[])
    with pytest.raises(SweepError, match="set seed with SEEDS, not as a recipe override"):
        plan_runs("0,55", overrides={"seed": 3})
    with pytest.raises(SweepError, match="^OVERRIDES='lr=0.1': expected a mapping of config fields"):
        plan_runs("0,55", overrides="lr=0.1")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_all.py"), "--seeds", "0", "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "run_all: error: SEEDS=0: nothing would run; give at least 1 seed"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, says", [
    (["--classes", "0,nope"], "unknown class"),
    (["--classes", "0"], "at least 2 classes"),
    (["--poolings", "max", "median"], "unknown pooling(s) median"),
    (["--models", "resnet"], "unknown model(s) resnet"),
    (["--seeds", "0"], "--seeds 0: nothing would run"),
    (["--seeds", "x"], "--seeds='x' is not allowed: expected a whole number"),
    (["--epochs", "0"], "--epochs 0 is not allowed: expected a whole number >= 1"),
    (["--poolings", ","], "--poolings names nothing"),
    (["--set", "lr=-1"], "lr=-1.0 is not allowed"),
    (["--set", "seed=3"], "set seed with --seeds"),
    (["--set", "lr"], "give KEY=VALUE"),
    (["--engine", "ray", "--address", "not-an-address"], "is not a Ray cluster address"),
    (["--engine", "ray", "--address", "127.0.0.1:{port}"], "no Ray cluster answers at 127.0.0.1:"),
    (["--engine", "ray", "--env-address", "127.0.0.1:{port}"], "($RAY_ADDRESS)"),
    (["--engine", "ray", "--cpus-per-run", "0"], "--cpus-per-run 0"),
    (["--address", "127.0.0.1:6379"], "needs --engine ray"),
    (["--gpus-per-run", "0.5"], "needs --engine ray"),
])
def test_bad_spec_is_one_line_before_anything(args, says, tmp_path, capsys, monkeypatch):
    port = _free_port()
    args = [a.format(port=port) for a in args]
    if "--env-address" in args:
        i = args.index("--env-address")
        monkeypatch.setenv("RAY_ADDRESS", args[i + 1])
        del args[i:i + 2]
    out = tmp_path / "sweep"
    t0 = time.perf_counter()
    rc = main(["sweep", "--models", "template", "--epochs", "1", "--out", str(out), "--no-bar", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert says in err and len(err.splitlines()) == 1, err
    assert not out.exists()                    # nothing trained, nothing written
    assert time.perf_counter() - t0 < 20       # an unreachable cluster fails fast, not after Ray's 14 minutes


def test_a_tiny_local_sweep_from_the_command_line(tmp_path, capsys):
    """The fast tier's sweep: two one-epoch runs on the local engine, each leaving a complete record, one
    comparison; run again, it trains nothing and rewrites nothing."""
    out = tmp_path / "s"
    args = ["sweep", "--classes", "0,55", "--models", "template", "--poolings", "stride", "max", "--seeds", "1",
            "--epochs", "1", "--out", str(out), "--no-bar"]
    assert main(args) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    recs = _complete_records(out)
    assert sorted(r.config.pooling for r in recs.values()) == ["max", "stride"]
    assert all(r.ok and r.config.classes == (0, 55) and r.config.epochs == 1 for r in recs.values())
    assert "=== apple-otter ===" in text and "template/stride" in text and "template/max" in text
    _no_staging_left(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps


def test_one_run_on_engine_ray_trains_in_process_without_starting_ray(tmp_path):
    import ray
    plan = make_sweep("0,55", ["template"], ["avg"], 1, 1)
    lines = []
    r = run_sweep(plan, tmp_path, engine="ray", progress=False, log=lines.append)
    assert any("one run to do: it trains in this process" in line for line in lines), lines
    assert not ray.is_initialized() and len(r.records) == 1 and next(iter(r.records.values())).ok


@pytest.mark.slow   # a subprocess importing torch, for one Ray detail: make test-all
def test_one_run_on_engine_ray_does_not_even_import_ray(tmp_path):
    # Importing Ray alone costs ~2 s on this CPU: the one-run shortcut must not pay it.
    code = ("import sys; from cifarlab.sweep import make_sweep, run_sweep; "
            "r = run_sweep(make_sweep('0,55', ['template'], ['avg'], 1, 1), sys.argv[1], engine='ray', "
            "progress=False, log=lambda s: None); "
            "assert len(r.records) == 1 and next(iter(r.records.values())).ok; "
            "print('ray imported' if 'ray' in sys.modules else 'ray not imported')")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "ray not imported", p.stdout


@pytest.mark.parametrize("seeds", [2, 1])      # many runs (Ray would start) and one run (it would train here)
def test_engine_ray_without_ray_says_how_to_install(tmp_path, capsys, monkeypatch, seeds):
    monkeypatch.setitem(sys.modules, "ray", None)     # import ray -> ImportError, as when it is not installed
    rc = main(["sweep", "--classes", "0,55", "--models", "template", "--poolings", "avg", "--seeds", str(seeds),
               "--engine", "ray", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "pip install 'cifarlab[ray]'" in err
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())   # nothing trained


def test_ray_imported_the_wrong_way_is_refused_before_it_starts(monkeypatch):
    import ray

    from cifarlab.sweep import SweepError, import_ray
    assert not ray.is_initialized()
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    assert import_ray(True) is ray                  # imported after the loopback variables: fine
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")      # as if imported without them
    with pytest.raises(SweepError, match="before cifarlab could make it listen on 127.0.0.1 only"):
        import_ray(True)
    assert import_ray(False) is ray                 # a cluster on another machine: fine then
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    with pytest.raises(SweepError, match="cannot join a cluster on another machine"):
        import_ray(False)


def test_make_sweep_builds_a_valid_command(tmp_path):
    p = subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", "-o", ".venv/.ray-installed", "sweep",
                        "SUBSETS=0,55 vehicles_1",
                        "ENGINE=ray", "SEEDS=3", "EPOCHS=2", "FORCE=1", "SWEEP_OUT=" + str(tmp_path / "x"),
                        "ADDRESS=127.0.0.1:6379", "GPUS_PER_RUN=0.25"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    import shlex
    argv = shlex.split(p.stdout.replace("\\\n", " "))
    assert argv[1:4] == ["-m", "cifarlab", "sweep"]
    from cifarlab.cli import build_parser
    a = build_parser().parse_args(argv[3:])
    assert a.classes == ["0,55", "vehicles_1"] and a.engine == "ray" and a.seeds == "3" and a.force
    assert a.epochs == "2" and a.address == "127.0.0.1:6379" and a.gpus_per_run == 0.25
    assert a.models == ["improved", "template"] and a.poolings == ["stride", "max", "avg"]
    p = subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", "sweep", "CLASSES=apple otter"], cwd=ROOT,
                       capture_output=True, text=True)
    argv = shlex.split(p.stdout.replace("\\\n", " "))
    a = build_parser().parse_args(argv[3:])
    assert a.classes == ["apple,otter"] and a.engine == "local" and a.template_epochs == "150" and not a.force


# --- records that come back from a worker -----------------------------------------------------------
def _worker_tmp() -> set:
    return set(Path(tempfile.gettempdir()).glob(f"cifarlab-run-{os.getpid()}-*"))


@pytest.fixture(scope="module")
def payload(sample_subset):
    plan = make_sweep("0,55,58", ["template"], ["stride"], 1, epochs=1)
    before = _worker_tmp()
    p = execute_run(plan.configs[0], sample_subset, threads=1)
    assert _worker_tmp() == before          # the worker's temporary folder is gone
    return plan.configs[0], p


def test_publish_writes_the_record_atomically_and_checks_it(payload, tmp_path):
    cfg, p = payload
    assert p["status"] == "ok" and set(p["files"]) == set(RECORD_FILES)
    rec = publish_record(tmp_path, cfg, p)
    assert rec.path == record_path(tmp_path, cfg) and rec.ok and rec.config == cfg
    assert {f: (rec.path / f).read_bytes() for f in RECORD_FILES} == p["files"]
    # a record whose config was changed on the way is refused, and nothing is left behind
    bad = dict(p, files={**p["files"], "config.json": p["files"]["config.json"].replace(b'"lr": 0.005',
                                                                                        b'"lr": 0.006')})
    other = tmp_path / "other"
    with pytest.raises(RecordError, match="was changed after the run"):
        publish_record(other, cfg, bad)
    assert not record_path(other, cfg).exists() and list(other.iterdir()) == []
    with pytest.raises(RecordError, match="unexpected files"):
        publish_record(other, cfg, dict(p, files={**p["files"], "../evil": b"x"}))
    # another run's record under this run's name is refused
    cfg2 = cfg.replace(seed=1)
    with pytest.raises(RecordError, match="another run"):
        publish_record(other, cfg2, p)
    assert list(other.iterdir()) == []


def test_diverged_payload_goes_beside_a_complete_record(payload, sample_subset, tmp_path):
    cfg, p = payload
    good = publish_record(tmp_path, cfg, p)
    before = (good.path / "model.pt").read_bytes()
    div_cfg = cfg.replace(lr=1e6)
    div = execute_run(div_cfg, sample_subset, threads=1)
    assert div["status"] == "diverged" and "nan" in div["error"]
    rec = publish_record(tmp_path, div_cfg, div)
    assert rec.diverged and rec.path == record_path(tmp_path, div_cfg)
    # pretend the diverged one had the good one's identity: it must not replace it
    fake = dict(div, files={**div["files"], "config.json": p["files"]["config.json"]})
    fake["files"]["metrics.json"] = json.dumps({**json.loads(div["files"]["metrics.json"]),
                                                "config_sha256": json.loads(p["files"]["metrics.json"])
                                                ["config_sha256"]}).encode()
    beside = publish_record(tmp_path, cfg, fake)
    assert beside.path.name == good.path.name + "_diverged" and beside.diverged
    assert (good.path / "model.pt").read_bytes() == before and load_record(good.path).ok


# --- a real local Ray, in this process --------------------------------------------------------------
@pytest.mark.cluster
class TestLocalRay:
    """``ray.init(num_cpus=2)`` here; the sweep uses that runtime and leaves it running."""

    @pytest.fixture(scope="class")
    @classmethod
    def ray_local(cls):
        import ray
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        yield ray
        ray.shutdown()

    @pytest.fixture(scope="class")
    @classmethod
    def plan(cls):
        # dry-run-sized: two epochs of the template net on two subsets of the shipped sample
        return make_sweep(["0,55", "55,58"], ["template"], ["stride", "max"], 1, epochs=2)

    def test_ray_records_equal_the_local_engines_and_resume_skips_them(self, ray_local, plan, tmp_path, monkeypatch):
        import cifarlab.data
        from cifarlab.sweep import RayEngine
        local = run_sweep(plan, tmp_path / "local", engine="local", cpus_per_run=1, progress=False)
        loads, puts = [], []
        load, put = cifarlab.data.subset_for, RayEngine.put
        monkeypatch.setattr(cifarlab.data, "subset_for", lambda cfg, *a, **k: loads.append(cfg.classes) or
                            load(cfg, *a, **k))
        monkeypatch.setattr(RayEngine, "put", lambda self, subset: puts.append(subset.classes.ids) or put(self, subset))
        ray_run = run_sweep(plan, tmp_path / "ray", engine="ray", cpus_per_run=1, progress=False)
        # each class subset loaded once by the driver and put in the object store once, for both its runs
        assert loads == puts == [(0, 55), (55, 58)]
        assert ray_local.is_initialized()                       # not ours to shut down
        assert ray_run.engine == "ray" and ray_run.workers == 2 and not ray_run.failed
        assert len(ray_run.trained) == len(plan) == 4 and len(local.trained) == 4
        recs_local, recs_ray = _complete_records(tmp_path / "local"), _complete_records(tmp_path / "ray")
        assert set(recs_ray) == set(recs_local) == {c.run_id for c in plan.configs}
        for rid, r in recs_ray.items():
            info = ray_run.runs[rid]
            assert info["pid"] != os.getpid() and info.get("node") and info["threads"] == 1   # ran in a worker
            a, b = r.metrics, recs_local[rid].metrics
            assert r.ok and (a["test_acc"], a["val_acc"], a["train_acc"], a["test_loss"]) == \
                (b["test_acc"], b["val_acc"], b["train_acc"], b["test_loss"])
            timing = ("train_seconds",)
            strip = lambda h: [{k: v for k, v in e.items() if k not in timing} for e in h]
            assert strip(r.history) == strip(recs_local[rid].history)
            assert np.array_equal(r.predictions("test")["logits"], recs_local[rid].predictions("test")["logits"])
        _no_staging_left(tmp_path / "ray")
        text = ray_run.report()
        assert "=== apple-otter ===" in text and "=== otter-pickup_truck ===" in text
        assert "Across subsets, pooled" in text
        assert re.search(r"template: stride - max, test accuracy: stride higher in \d of 2 subsets", text)

        # resume: nothing is submitted, nothing rewritten
        stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*")}
        again = run_sweep(plan, tmp_path / "ray", engine="ray", progress=False)
        assert again.trained == [] and len(again.reused) == 4
        assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*")} == stamps
        # one record gone: exactly that run is trained again
        gone = plan.configs[2]
        shutil.rmtree(record_path(tmp_path / "ray", gone))
        third = run_sweep(plan, tmp_path / "ray", engine="ray", cpus_per_run=1, progress=False)
        assert third.trained == [gone.run_id] and len(third.reused) == 3

    def test_a_diverged_run_is_recorded_and_the_sweep_goes_on(self, ray_local, tmp_path):
        from cifarlab.sweep import sweep  # the one-call API a notebook uses
        r = sweep("0,55", ["template"], ["stride"], 2, 1, overrides={"lr": ["1e6", "0.005"]}, out=tmp_path,
                  engine="ray", progress=False)
        assert len(r.trained) == 4 and not r.failed and len(r.diverged) == 2
        assert {rec.config.lr for rec in r.diverged} == {1e6}
        assert all(load_record(rec.path).diverged for rec in r.diverged)
        text = r.report()
        assert text.count("diverged, not compared") == 2 and "=== apple-otter ===" in text


    def test_retries_are_bounded_and_a_run_without_a_record_is_listed(self, ray_local, tmp_path):
        """retries=0: a worker killed mid-run is not retried; its run is listed as failed, the other
        run of the sweep completes, and nothing half-written is left."""
        plan = make_sweep("0,55", ["template"], ["max"], 2, epochs=40)
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("r", run_sweep(plan, tmp_path, engine="ray", retries=0,
                                                                          cpus_per_run=1, progress=False)))
        t.start()
        victim, deadline = None, time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            running = [p for p in _descendants([os.getpid()]) if _cmdline(p).startswith("ray::cifarlab_run")]
            if running:
                time.sleep(0.5)
                victim = running[0] if running[0] in _descendants([os.getpid()]) else None
            time.sleep(0.05)
        assert victim is not None, "no sweep task seen running"
        os.kill(victim, signal.SIGKILL)
        t.join(180)
        r = box["r"]
        assert len(r.failed) == 1 and len(r.trained) == 1, (r.failed, r.trained)
        (why,) = r.failed.values()
        assert "after 1 attempt(s)" in why, why
        assert len(_complete_records(tmp_path)) == 1
        _no_staging_left(tmp_path)
        assert "FAILED, no record" in r.report()

    def test_a_run_that_raises_in_its_worker_is_listed_and_the_sweep_goes_on(self, ray_local, tmp_path):
        not_a_folder = tmp_path / "file"
        not_a_folder.write_text("x")
        plan = make_sweep("0,55", ["template"], ["stride"], 2, epochs=1)
        r = run_sweep(plan, tmp_path / "out", engine="ray", worker_data_dir=not_a_folder, progress=False)
        assert len(r.failed) == 2 and not r.trained
        assert all(w.startswith("DataDirError: ") and "is a file, not a folder" in w for w in r.failed.values())
        assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())

    def test_cli_exits_1_when_runs_end_without_a_record(self, ray_local, tmp_path, capsys):
        not_a_folder = tmp_path / "file"
        not_a_folder.write_text("x")
        rc = main(["sweep", "--classes", "0,55", "--models", "template", "--poolings", "stride", "--seeds", "1",
                   "--epochs", "1", "--engine", "ray", "--worker-data-dir", str(not_a_folder), "--out",
                   str(tmp_path / "out"), "--no-bar"])
        cap = capsys.readouterr()
        assert rc == 1, cap.err
        assert "[1/1] template/stride seed 0 on apple-otter: FAILED, no record - DataDirError" in cap.out
        assert cap.err.strip().splitlines()[-1].startswith("cifarlab: error: 1 run(s) ended without a record")


# --- the command line starting its own Ray; Ctrl-C ----------------------------------------------------
@pytest.mark.cluster
def test_cli_local_ray_listens_on_loopback_only_and_ctrl_c_keeps_finished_records(tmp_path):
    ray_tmp = Path(tempfile.mkdtemp(prefix="clray-", dir=RAY_TMP))
    out = tmp_path / "sweep"
    cli = Cli(["sweep", "--classes", "0,55", "--classes", "55,58", "--models", "template", "--poolings", "stride",
               "max", "avg", "--seeds", "2", "--epochs", "120", "--engine", "ray", "--out", str(out), "--no-bar"],
              _env(RAY_TMPDIR=str(ray_tmp)), tmp_path)
    try:
        cli.wait_for(r"^engine ray: a local Ray on 127\.0\.0\.1 \(1 node\(s\), \d+ CPUs", 120)
        # every listener of the CLI and of the Ray processes it started is on 127.0.0.1
        n = _assert_loopback_only(_descendants([cli.proc.pid]))
        assert n >= 3       # at least the GCS, the raylet and the object manager
        cli.wait_for(r"^\[1/12\] ", 180)
        cli.proc.send_signal(signal.SIGINT)   # one Ctrl-C (tests/conftest.py: SIGINT at its default, as in a terminal)
        rc = cli.finish(90)
    finally:
        if cli.proc.poll() is None:
            cli.proc.kill()
    assert rc == 130, cli.text()
    assert "interrupted; finished records are kept" in "\n".join(cli.err)
    recs = _complete_records(out)
    finished = [line for line in cli.out if re.match(r"^\[\d+/12\] ", line)]
    assert 1 <= len(recs) == len(finished) < 12          # every finished run kept, the rest not half-written
    _no_staging_left(out)
    # the Ray it started is gone: no process left that uses its session folder
    deadline = time.monotonic() + 20
    while (left := [p for p in _ppids() if str(ray_tmp) in _cmdline(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, [_cmdline(p) for p in left]
    shutil.rmtree(ray_tmp, ignore_errors=True)


# --- the benchmark, in dry-run mode -------------------------------------------------------------------
@pytest.mark.cluster
def test_benchmark_dry_run_prints_its_last_line(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="b-", dir=RAY_TMP)    # its own Ray sessions, whatever else runs
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sweep.py"), "--dry-run"], cwd=tmp_path,
                       env=_env(RAY_TMPDIR=ray_tmp), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert re.fullmatch(r"sweep throughput ray vs local: \d+\.\d\dx \(\d+\.\d vs \d+\.\d runs/min, 2 runs, "
                        r"2 workers\)", lines[-1]), lines[-1]
    assert lines[-2].startswith("machine: ") and " cores" in lines[-2]
    assert re.search(r"^2 runs, warm: local \d+\.\d s \(.*\), ray \d+\.\d s \(.*\): ray vs local \d+\.\d\dx",
                     p.stdout, re.M)
    assert "engine ray: a local Ray on 127.0.0.1" in p.stdout and "engine local:" in p.stdout


# --- a real two-node cluster on loopback -------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def _raylet(node) -> int:
    return node.all_processes["raylet"][0].process.pid


def _two_nodes(c):
    if not c.worker_nodes:
        c.add_node(num_cpus=1)
        c.wait_for_nodes()
    return c.head_node, next(iter(c.worker_nodes))


SWEEP4 = ["sweep", "--classes", "0,55", "--models", "template", "--poolings", "stride", "max", "--seeds", "2",
          "--epochs", "30", "--engine", "ray", "--no-bar"]


def _check_cluster_sweep(cli, out, rc):
    assert rc == 0, cli.text()
    finished = [line for line in cli.out if re.match(r"^\[\d/4\] template/(stride|max) seed \d on apple-otter: "
                                                      r"test acc", line)]
    assert len(finished) == 4, cli.text()
    assert len(_complete_records(out)) == 4
    _no_staging_left(out)
    assert "=== apple-otter ===" in "\n".join(cli.out)
    return finished


@pytest.mark.cluster
def test_cluster_cli_survives_a_worker_killed_mid_run(cluster, tmp_path):
    head, worker = _two_nodes(cluster)
    raylets = {_raylet(head), _raylet(worker)}
    out = tmp_path / "sweep"
    cli = Cli([*SWEEP4, "--out", str(out)], _env(RAY_ADDRESS=cluster.address, RAY_TMPDIR=RAY_TMP), tmp_path)
    try:
        line = cli.wait_for(r"^engine ray: the Ray cluster at 127\.0\.0\.1:\d+ \(2 node\(s\), 2 CPUs", 120)
        assert "2 run(s) at a time" in line
        _assert_loopback_only(_descendants([os.getpid()]))    # the cluster, the CLI and its workers
        victim, deadline = None, time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            tasks = _running_tasks(raylets)
            if tasks:
                time.sleep(1.0)                  # well inside its run (a run takes several seconds)
                if tasks[0] in _running_tasks(raylets):
                    victim = tasks[0]
            time.sleep(0.05)
        assert victim is not None, "no sweep task seen running:\n" + cli.text()
        os.kill(victim, signal.SIGKILL)
        rc = cli.finish(240)
    finally:
        if cli.proc.poll() is None:
            cli.proc.kill()
    finished = _check_cluster_sweep(cli, out, rc)
    assert not any(f"pid {victim} " in line for line in finished), "the killed worker's run was not retried"
    assert re.search(r"retries remaining, so the task will be retried", cli.text()), cli.text()   # Ray says so
    # the killed run's temporary folder on the worker's disk was cleaned up by the runs after it
    assert not list(Path(tempfile.gettempdir()).glob(f"cifarlab-run-{victim}-*"))


@pytest.mark.cluster
def test_cluster_cli_survives_a_node_removed_mid_sweep(cluster, tmp_path):
    head, worker = _two_nodes(cluster)
    head_id = head.node_id
    out = tmp_path / "sweep"
    cli = Cli([*SWEEP4, "--out", str(out)], _env(RAY_ADDRESS=cluster.address, RAY_TMPDIR=RAY_TMP), tmp_path)
    try:
        cli.wait_for(r"^engine ray: the Ray cluster at .*\(2 node\(s\)", 120)
        deadline = time.monotonic() + 120
        while not _running_tasks({_raylet(worker)}) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _running_tasks({_raylet(worker)}), "no sweep task seen on the worker node:\n" + cli.text()
        time.sleep(1.0)
        done_before = len([line for line in cli.out if line.startswith("[")])
        cluster.remove_node(worker)
        rc = cli.finish(240)
    finally:
        if cli.proc.poll() is None:
            cli.proc.kill()
    finished = _check_cluster_sweep(cli, out, rc)
    assert re.search(r"retries remaining, so the task will be retried", cli.text()), cli.text()
    # what finished after the node went finished on the head
    assert all(f"node {head_id[:8]}" in line for line in finished[done_before + 1:]), cli.text()


# --- a student's own net (issue 23) on both engines ----------------------------------------------------


def _own_records(out: Path) -> dict:
    recs = {}
    for m in sorted(out.glob("*/metrics.json")):
        rec = load_record(m.parent)
        recs[(rec.config.model, rec.config.pooling)] = rec
    return recs


def test_a_file_net_in_a_local_sweep_is_compared_with_the_template(tmp_path, cli):
    (tmp_path / "tinynet.py").write_text(TINY_NET)
    out = tmp_path / "sweep"
    r = cli("sweep", "--classes", "0,55,58", "--models", "template", "tinynet.py:TinyNet", "--poolings", "max",
            "--seeds", "1", "--epochs", "1", "--engine", "local", "--no-bar", "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    recs = _own_records(out)
    assert set(recs) == {("template", "max"), ("TinyNet", "max")}
    assert (recs[("TinyNet", "max")].path / "model.pt2").is_file()
    assert re.search(r"(TinyNet/max vs template/max|template/max vs TinyNet/max)", r.stdout), r.stdout


@pytest.mark.cluster
def test_cluster_sweep_of_a_file_net(cluster, tmp_path):
    """The net's file reaches the Ray workers of the loopback two-node cluster by its FILE:CLASS; each worker
    builds it again, checks it is the planned net (its fingerprint), trains and sends the record back."""
    _two_nodes(cluster)
    (tmp_path / "tinynet.py").write_text(TINY_NET)
    out = tmp_path / "sweep"
    cli = Cli(["sweep", "--classes", "0,55", "--models", "tinynet.py:TinyNet", "--poolings", "stride", "max",
               "--seeds", "1", "--epochs", "2", "--engine", "ray", "--no-bar", "--out", str(out)],
              _env(RAY_ADDRESS=cluster.address, RAY_TMPDIR=RAY_TMP), tmp_path)
    assert cli.finish(300) == 0, cli.text()
    recs = _own_records(out)
    assert set(recs) == {("TinyNet", "stride"), ("TinyNet", "max")}
    assert all((r.path / "model.pt2").is_file() and "class TinyNet" in (r.path / "net.py").read_text()
               for r in recs.values())
    _no_staging_left(out)
