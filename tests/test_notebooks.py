"""The notebook suite: committed clean, and executed end to end by papermill on the shipped sample."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cifarlab.export import load_best, onnx_predict
from cifarlab.records import find_records

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("nbtool", ROOT / "scripts" / "nbtool.py")
nbtool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbtool)


def test_the_suite_is_there():
    assert [p.name for p in NOTEBOOKS] == ["00_pick_classes.ipynb", "01_train.ipynb", "02_compare.ipynb",
                                           "03_reload.ipynb", "04_across_subsets.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_are_clean(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name} carries outputs"
    assert "widgets" not in nb["metadata"], f"{path.name} carries metadata.widgets"
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one papermill parameters cell"
    text = json.dumps(nb)
    assert "colab.research.google.com" in text and "cifarlab @ git+" in text  # Colab badge and install cell
    # the kernel JupyterLab and Colab both start for it, under the name JupyterLab itself writes back
    assert nb["metadata"]["kernelspec"] == {"display_name": "Python 3 (ipykernel)", "language": "python",
                                            "name": "python3"}
    assert all(set(c["metadata"]) <= {"tags"} for c in nb["cells"]), "per-cell metadata (Colab ids, scroll state)"
    # exactly what the git filter commits (no outputs, no widget state, Jupyter's own layout)
    assert path.read_text() == nbtool.dumps(nbtool.clean(json.loads(path.read_text())))


def _nb_with_outputs(path: Path) -> str:
    """The notebook as Jupyter autosaves it after a run: outputs, counts, widget state, another kernel."""
    nb = json.loads(path.read_text())
    for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        cell["execution_count"] = i + 1
        cell["outputs"] = [{"name": "stdout", "output_type": "stream", "text": ["hello\n"]}]
        cell["metadata"]["execution"] = {"iopub.status.idle": "2025-01-01T00:00:00Z"}
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    nb["metadata"]["kernelspec"] = {"display_name": "Python (cifarlab)", "language": "python", "name": "cifarlab"}
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.7", "mimetype": "text/x-python"}
    return json.dumps(nb, indent=1)


def test_git_filter_keeps_autosaved_outputs_out_of_commits(tmp_path):
    """`make setup` defines the clean filter that .gitattributes names: a notebook Jupyter saved with
    outputs is unchanged for git; a real edit shows as only that edit and is committed without outputs."""
    if not shutil.which("git") or not shutil.which("make"):
        pytest.skip("needs git and make")
    repo = tmp_path / "clone"
    (repo / "scripts").mkdir(parents=True)
    (repo / "notebooks").mkdir()
    for f in ("Makefile", ".gitattributes", "scripts/nbtool.py", "notebooks/01_train.ipynb"):
        shutil.copy(ROOT / f, repo / f)
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=repo,
                                    capture_output=True, text=True, check=True).stdout
    git("init", "-q")
    made = subprocess.run(["make", "-s", "nbfilter", f"PYTHON={sys.executable}"], cwd=repo, capture_output=True,
                          text=True)
    assert made.returncode == 0 and "filter cifarlab-notebooks set" in made.stdout, made.stderr
    assert "nbtool.py clean" in git("config", "filter.cifarlab-notebooks.clean")
    git("add", "-A")
    git("commit", "-qm", "clean")
    nb = repo / "notebooks" / "01_train.ipynb"
    nb.write_text(_nb_with_outputs(nb))
    assert git("diff") == ""                            # autosaved outputs: no change for git
    git("add", "-A")                                    # (git status lists the file until it is added)
    assert git("diff", "--cached") == "" and git("status", "--porcelain") == ""
    edited = json.loads(nb.read_text())
    (line,) = [ln for ln in edited["cells"][2]["source"] if ln.startswith("SEEDS = 2 ")]
    edited["cells"][2]["source"] = "".join(edited["cells"][2]["source"]).replace("SEEDS = 2 ", "SEEDS = 3 ")
    nb.write_text(json.dumps(edited))
    diff = git("diff")
    assert [ln for ln in diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")] == \
        [f"{sign}    {json.dumps(text, ensure_ascii=False)}," for sign, text in
         (("-", line), ("+", line.replace("SEEDS = 2 ", "SEEDS = 3 ")))]
    git("commit", "-qam", "seed 1")
    committed = json.loads(git("show", "HEAD:notebooks/01_train.ipynb"))
    assert all(c.get("outputs", []) == [] for c in committed["cells"]) and "widgets" not in committed["metadata"]
    assert committed["metadata"]["kernelspec"]["name"] == "python3"
    assert "hello" in nb.read_text()                    # the working copy keeps its outputs


def test_setup_registers_the_kernel_inside_the_venv(tmp_path):
    """`make setup` puts its kernel in the venv (another clone's setup cannot repoint it);
    `make user-kernel` names a per-user kernel after the clone, so two clones get two kernels."""
    if not shutil.which("make"):
        pytest.skip("needs make")
    dry = lambda target, where: subprocess.run(["make", "-n", "-B", target], cwd=where, capture_output=True,
                                               text=True, check=True).stdout
    setup = [ln for ln in dry("setup", ROOT).splitlines() if "ipykernel install" in ln]
    assert len(setup) == 1 and "--sys-prefix" in setup[0] and "--user" not in setup[0]
    names = []
    for clone in ("a", "b"):
        (tmp_path / clone).mkdir()
        for f in ("Makefile", "pyproject.toml"):
            shutil.copy(ROOT / f, tmp_path / clone / f)
        # the recipe itself, with PY=echo: what it would register (-o: no venv is made for it)
        cmd = subprocess.run(["make", "-s", "-o", ".venv/.installed", "user-kernel", "PY=echo"], cwd=tmp_path / clone,
                             capture_output=True, text=True, check=True).stdout
        names.append(re.search(r"--name (\S+)", cmd).group(1))
        assert "--user" in cmd and f"Python (cifarlab: {tmp_path / clone})" in cmd
    assert names[0] != names[1] and all(n.startswith("cifarlab-") for n in names)


def _outputs(nb_path: Path, needle: str) -> list[dict]:
    """The outputs of the one cell whose source contains ``needle``."""
    nb = json.loads(Path(nb_path).read_text())
    (cell,) = [c for c in nb["cells"] if needle in "".join(c["source"])]
    return cell["outputs"]


def _text(outputs) -> str:
    return "".join("".join(o.get("text", "")) for o in outputs)


def _run_all(out, *args, cwd, timeout=600, **popen):
    cmd = [sys.executable, str(ROOT / "scripts" / "run_all.py"), "--out", str(out), "--kernel", "python3", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, **popen)


def test_the_lab_in_four_notebooks_with_one_tiny_run(tmp_path):
    """make test's notebook run: make run-all with one template run of one epoch - pick, train, compare
    (best/ with ONNX), reload in a fresh kernel - each notebook executed by papermill."""
    out = tmp_path / "out"
    r = _run_all(out, "--models", "template", "--poolings", "avg", "--seeds", "1", "--epochs", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (rec,) = find_records(out / "runs")
    assert rec.ok and (rec.config.model, rec.config.pooling, rec.config.epochs) == ("template", "avg", 1)
    exp = out / "apple-otter-pickup_truck"
    assert {p.name[:2] for p in (exp / "notebooks").glob("*.ipynb")} == {"00", "01", "02", "03"}
    assert json.loads((exp / "best" / "selection.json").read_text())["run"] == str(rec.path)
    text = _text(_outputs(exp / "notebooks" / "03_reload.ipynb", "verify_reload("))
    n = rec.metrics["n_test"]
    assert f"PyTorch : {n}/{n} predictions as recorded" in text and f"ONNX    : {n}/{n} predictions as recorded" in text


def test_make_run_all_names_a_bad_value_as_make_does_in_one_line(tmp_path):
    # through make the numbers arrive as text: one line naming make's variable, before anything runs
    (tmp_path / "afile").write_text("not a folder")
    for args, says in ((["--seeds", "abc"], "SEEDS='abc' is not allowed: expected a whole number"),
                       (["--epochs", "x"], "EPOCHS='x' is not allowed"),
                       (["--template-epochs", "-1"], "TEMPLATE_EPOCHS=-1 is not allowed: expected a whole number >= 1"),
                       (["--data-dir", str(tmp_path / "afile")], f"DATA_DIR {tmp_path / 'afile'} is a file")):
        r = _run_all(tmp_path / "out", *args, cwd=tmp_path, timeout=120)
        assert r.returncode == 2 and r.stderr.startswith(f"run_all: error: {says}"), r.stderr
        assert "\n" not in r.stderr.strip() and not (tmp_path / "out" / "runs").exists()


def test_make_clean_removes_caches_never_results(tmp_path):
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    shutil.copy(ROOT / "Makefile", tmp_path)
    kept = ["out/runs/improved_max_seed0_c0-55-58_0123abcd/metrics.json", "runs/mine/metrics.json",
            "best/model.onnx", "elsewhere/best/model.onnx", ".venv/lib/__pycache__/x.pyc"]
    gone = ["cifarlab/__pycache__/x.pyc", ".pytest_cache/v/x", "build/lib/x.py"]
    for f in kept + gone:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    r = subprocess.run(["make", "-s", "clean", "OUT=elsewhere"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert all((tmp_path / f).is_file() for f in kept) and not any((tmp_path / f).exists() for f in gone)


def test_make_distclean_removes_this_clones_user_kernel_only(tmp_path):
    """`make user-kernel` registers a per-user kernel for this clone; distclean deletes the venv it points at,
    so it removes that kernel too, and never another clone's."""
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    env = {**os.environ, "JUPYTER_DATA_DIR": str(tmp_path / "jupyter")}
    for clone in ("a", "b"):
        (tmp_path / clone).mkdir()
        shutil.copy(ROOT / "Makefile", tmp_path / clone)
        subprocess.run(["make", "-s", "-o", ".venv/.installed", "user-kernel", f"PY={sys.executable}"],
                       cwd=tmp_path / clone, env=env, capture_output=True, text=True, check=True, timeout=120)
    kernels = lambda: sorted(p.name for p in (tmp_path / "jupyter" / "kernels").iterdir())
    assert len(kernels()) == 2
    r = subprocess.run(["make", "-s", "distclean", f"PY={sys.executable}"], cwd=tmp_path / "a", env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    (left,) = kernels()
    assert "removed the kernel" in r.stdout and left not in r.stdout
    assert json.loads((tmp_path / "jupyter" / "kernels" / left / "kernel.json").read_text())["display_name"] == \
        f"Python (cifarlab: {tmp_path / 'b'})"


@pytest.mark.parametrize("out, address", [("out", "model=/out/<experiment>/best/model.onnx"),
                                          ("{root}/lab", "model=/lab/<experiment>/best/model.onnx"),
                                          ("/tmp/lab", None), ("../lab", None), ("~/lab", None)])
def test_make_web_gives_an_address_only_for_results_its_server_shows(out, address):
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    r = subprocess.run(["make", "-n", "-o", "web-deps", "web", f"OUT={out.format(root=ROOT)}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (address in r.stdout) if address else ("pick model.onnx and classes.json from" in r.stdout
                                                  and "?model=" not in r.stdout)


@pytest.mark.slow   # the whole suite, 20 notebooks: make test-all (make test runs the tiny one below)
def test_whole_suite_interrupted_resumed_and_a_second_experiment(tmp_path):
    """The suite as a user meets it: Ctrl-C after the first training run; the rerun skips that run (its
    record untouched) and finishes - comparison, best/ with ONNX, reload in a fresh kernel. Then other
    classes into the same OUT: a second experiment with its own comparison, the first left as it was."""
    import signal
    import time

    import torch

    from cifarlab.data import load_subset

    out = tmp_path / "out"
    args = ["--seeds", "1", "--epochs", "2"]
    cmd = [sys.executable, str(ROOT / "scripts" / "run_all.py"), "--out", str(out), "--kernel", "python3", *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    t0 = time.time()
    while not list((out / "runs").glob("*/metrics.json")) and time.time() - t0 < 180 and p.poll() is None:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    log, _ = p.communicate(timeout=120)
    assert p.returncode == 130 and "interrupted" in log and "run the same command again" in log, log[-2000:]
    (first,) = list((out / "runs").glob("*/metrics.json"))
    stamp = first.stat().st_mtime_ns
    exp = out / "apple-otter-pickup_truck"
    assert not (exp / "best").exists()

    r = _run_all(out, *args, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"skipped: improved net, stride pooling, seed 0 (record exists: {first.parent})" in r.stdout
    assert "(5 runs trained, 1 skipped" in r.stdout and first.stat().st_mtime_ns == stamp
    records = find_records(out / "runs")
    assert sorted((rec.config.model, rec.config.pooling) for rec in records) == sorted(
        (m, p) for m in ("improved", "template") for p in ("stride", "max", "avg"))
    # the comparison chose a model and saved it with an ONNX export that matches PyTorch
    sel = json.loads((exp / "best" / "selection.json").read_text())
    assert "choose the configuration" in sel["rule"] and sel["onnx_check"]["opset"] >= 18
    assert sel["experiment_name"] == "apple-otter-pickup_truck" and len(sel["configurations"]) == 6
    model, cfg, classes = load_best(exp / "best")
    chosen = [rec for rec in records if str(rec.path) == sel["run"]][0]
    sub = load_subset(cfg.classes, verbose=False)
    with torch.inference_mode():
        want = model(sub.x_test[:7]).numpy()
    assert np.allclose(onnx_predict(exp / "best" / "model.onnx", sub.x_test.numpy()[:7]), want, atol=1e-4)
    # the reload notebook, in its own kernel, reproduced the recorded predictions
    text = _text(_outputs(exp / "notebooks" / "03_reload.ipynb", "verify_reload("))
    n = chosen.metrics["n_test"]
    assert f"PyTorch : {n}/{n} predictions as recorded" in text and f"ONNX    : {n}/{n} predictions as recorded" in text
    assert "trained on cpu, reloaded on cpu" in text
    # the comparison notebook printed the paired verdicts
    verdicts = _text(_outputs(exp / "notebooks" / "02_compare.ipynb", "print(comparison.verdicts)"))
    assert "paired test" in verdicts and "interval" in verdicts and "distinguishable" in verdicts
    assert _text(_outputs(exp / "notebooks" / "02_compare.ipynb", 'print("Choice:"')).startswith("Choice: ")
    # the picker notebook ran without a front end and printed the selection
    printed = _text(_outputs(exp / "notebooks" / "00_pick_classes.ipynb", "print(picker)"))
    assert 'make run-all CLASSES="apple otter pickup_truck"' in printed and "CLASSES = [0, 55, 58]" in printed
    # the training cell stays quiet under papermill: a few lines and ONE figure, not a flood of redraws
    training = _outputs(exp / "notebooks" / "01_train_improved_max_seed0.ipynb", "run_grid(plan")
    images = [o for o in training if "image/png" in o.get("data", {})]
    assert len(images) == 1, f"{len(images)} figures in the training cell"
    assert len(_text(training).splitlines()) <= 15

    best_1 = (exp / "best" / "model.pt").read_bytes()
    r = _run_all(out, "--seeds", "1", "--epochs", "1", "--models", "template", "--poolings", "avg", "--classes",
                 "0 58", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = _text(_outputs(out / "apple-pickup_truck" / "notebooks" / "02_compare.ipynb", "comparison = compare("))
    assert "Experiment apple-pickup_truck" in summary and "(1 complete runs)" in summary
    assert "Other experiments in this runs folder (not compared here): apple-otter-pickup_truck" in summary
    assert (exp / "best" / "model.pt").read_bytes() == best_1  # the first comparison's result kept
    assert len(find_records(out / "runs")) == 7


@pytest.mark.slow   # two more notebooks: make test-all
def test_a_failing_cell_stops_the_suite_and_keeps_the_notebook(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts" / "run_all.py"), "--out", str(out), "--seeds", "1", "--epochs", "1",
           "--models", "template", "--poolings", "avg", "--kernel", "python3", "--data-dir", str(tmp_path / "nodata")]
    # classes outside the sample with no data and no network: the training notebook must fail clearly
    r = subprocess.run(cmd + ["--classes", "1 2"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**__import__("os").environ, "CIFARLAB_URL": "http://127.0.0.1:9/none.tar.gz"})
    assert r.returncode == 1
    assert "DataError" in r.stderr
    kept = out / "aquarium_fish-baby" / "notebooks" / "01_train_template_avg_seed0.ipynb"
    assert kept.is_file() and "could not download" in kept.read_text()
    # the failing cell shows the error as its one line, not a traceback
    errors = [o for c in json.loads(kept.read_text())["cells"] for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "DataError"
    assert len(errors[0]["traceback"]) == 1 and errors[0]["traceback"][0].startswith("DataError: could not download")
    assert not (out / "aquarium_fish-baby" / "best").exists()


@pytest.mark.slow   # four notebooks run: make test-all (make test runs the tiny suite)
def test_training_notebook_trains_a_grid_then_skips_it(tmp_path):
    """01_train as a student runs the lab from it, under papermill: two tactics and one seed in one notebook -
    both trained, two records, one bar and one figure per run in the training cell (papermill: LIVE=False);
    run again, both skipped and nothing trained. Then 02_compare with BEST=None: compared, nothing saved."""
    import papermill as pm

    runs = tmp_path / "runs"
    params = dict(MODELS="template", POOLINGS=["stride", "max"], SEEDS=1, EPOCHS=1, OUT=str(runs), LIVE=False,
                  USE_PICKER=False)
    run = lambda name, out, **p: pm.execute_notebook(str(ROOT / "notebooks" / name), str(tmp_path / out),
                                                     parameters=p, kernel_name="python3", progress_bar=False,
                                                     cwd=str(tmp_path))
    run("01_train.ipynb", "first.ipynb", **params)
    records = find_records(runs)
    assert sorted(r.config.pooling for r in records) == ["max", "stride"]
    stamps = {r.path: (r.path / "metrics.json").stat().st_mtime_ns for r in records}
    training = _outputs(tmp_path / "first.ipynb", "run_grid(plan")
    kinds = ["png" if "image/png" in o.get("data", {}) else "bar" if re.search(r": 100%\|.*\| (\d+)/\1 ", _text([o]))
             else "text" for o in training]
    assert [k for k in kinds if k != "text"] == ["bar", "png", "bar", "png"], kinds   # one of each per run, in order
    bars = [ln for ln in _text(training).splitlines() if "100%|" in ln]
    assert bars[0].startswith("template net, stride pooling, seed 0") and bars[1].startswith("template net, max")
    table = _text(_outputs(tmp_path / "first.ipynb", "grid_table(done)")).splitlines()
    state = lambda ln: re.search(r"  (trained|skipped|diverged)  ", ln).group(1)
    assert [state(ln) for ln in table[1:]] == ["trained", "trained"], table

    run("01_train.ipynb", "second.ipynb", **params)
    training = _outputs(tmp_path / "second.ipynb", "run_grid(plan")
    assert not [o for o in training if "image/png" in o.get("data", {})] and "100%|" not in _text(training)
    assert "skipped: template net, stride pooling, seed 0 (record exists" in _text(training)
    table = _text(_outputs(tmp_path / "second.ipynb", "grid_table(done)")).splitlines()
    assert [state(ln) for ln in table[1:]] == ["skipped", "skipped"], table
    assert {r.path: (r.path / "metrics.json").stat().st_mtime_ns for r in find_records(runs)} == stamps

    run("02_compare.ipynb", "compare.ipynb", RUNS=str(runs), BEST=None)
    assert "template/stride vs template/max" in _text(_outputs(tmp_path / "compare.ipynb",
                                                               "print(comparison.verdicts)")).replace(
        "template/max vs template/stride", "template/stride vs template/max")
    assert "BEST = None: nothing saved" in _text(_outputs(tmp_path / "compare.ipynb", "comparison.save("))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_your_own_net_from_a_cell_through_compare_and_a_fresh_kernel_reload(tmp_path):
    """Issue 23 as a student does it: 01_train's own-net section (the worked example MyNet, which takes a
    pooling argument) trains beside a template run of the same experiment; 02_compare pairs them and saves
    best/; 03_reload, in its own fresh kernel that never saw MyNet, reproduces the recorded predictions with
    PyTorch (the torch.export program) and onnxruntime whichever net was chosen."""
    import papermill as pm

    runs, best = tmp_path / "runs", tmp_path / "best"
    run = lambda name, out, **p: pm.execute_notebook(str(ROOT / "notebooks" / name), str(tmp_path / out),
                                                     parameters=p, kernel_name="python3", progress_bar=False,
                                                     cwd=str(tmp_path))
    run("01_train.ipynb", "train.ipynb", MODELS="template", POOLINGS="max", SEEDS=1, EPOCHS=2, OUT=str(runs),
        LIVE=False, USE_PICKER=False, TRAIN_MY_NET=True)
    records = {r.config.model: r for r in find_records(runs)}
    assert set(records) == {"template", "MyNet"} and records["MyNet"].config.pooling == "max"
    assert "class MyNet(nn.Module):" in (records["MyNet"].path / "net.py").read_text()
    assert "MyNet net, max pooling, seed 0" in _text(_outputs(tmp_path / "train.ipynb", "my_plan = plan_runs("))
    run("02_compare.ipynb", "compare.ipynb", RUNS=str(runs), BEST=str(best))
    verdicts = _text(_outputs(tmp_path / "compare.ipynb", "print(comparison.verdicts)"))
    assert "MyNet/max vs template/max" in verdicts or "template/max vs MyNet/max" in verdicts
    run("03_reload.ipynb", "reload.ipynb", BEST=str(best))
    text = _text(_outputs(tmp_path / "reload.ipynb", "verify_reload("))
    assert re.search(r"PyTorch : 300/300 predictions as recorded", text), text
    assert re.search(r"ONNX    : 300/300 predictions as recorded", text), text
