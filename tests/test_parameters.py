"""Every notebook checks all of its parameters in the cell after its parameters cell, before any work:
most cases here through cifarlab.parameters directly, the shape of the failure (one line, at that cell,
nothing loaded) through papermill."""
import json
import re
from pathlib import Path

import pytest

from cifarlab.parameters import NOT_PARAMETERS, SPECS, ParameterError, check_parameters

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def _parameters_cell(name: str) -> dict:
    """The notebook's parameters, as its parameters cell sets them (run here: ``cifarlab.out_path`` too)."""
    import cifarlab
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    (cell,) = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    ns = {"cifarlab": cifarlab, "REPO_URL": "https://example.invalid/cifarlab"}   # the setup cell's
    exec("".join(cell["source"]), ns)
    return ns


@pytest.mark.parametrize("name", sorted(SPECS))
def test_each_notebook_checks_exactly_its_parameters_cell(name):
    ns = _parameters_cell(name)
    assert {n for n in ns if re.fullmatch(r"[A-Z][A-Z0-9_]*", n)} - {"REPO_URL"} == set(SPECS[name])
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    i = [j for j, c in enumerate(nb["cells"]) if "parameters" in c["metadata"].get("tags", [])][0]
    following = [c for c in nb["cells"][i + 1:] if c["cell_type"] == "code"][0]
    assert f'check_parameters("{name}", globals())' in "".join(following["source"])   # the next code cell
    check_parameters(name, ns)          # the defaults pass


def _bound_names(source: str) -> set[str]:
    """The names a cell's code binds at the notebook's top level (IPython's % and ! lines left out)."""
    import ast
    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


@pytest.mark.parametrize("name", sorted(SPECS))
def test_running_a_notebook_again_in_its_kernel_passes_its_check(name):
    # "Run all" a second time: every ALL_CAPS name the cells left in globals() meets the check again, which
    # takes a name it does not know for a misspelt parameter (02 once imported CHOICE_RULE and failed there)
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    bound = set().union(*(_bound_names("".join(c["source"])) for c in nb["cells"] if c["cell_type"] == "code"))
    assert "check_parameters" in bound     # the parse saw the cells
    caps = {n for n in bound if re.fullmatch(r"[A-Z][A-Z0-9_]*", n)}
    assert caps - set(SPECS[name]) - NOT_PARAMETERS == set()


def test_values_are_coerced_and_paths_expanded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = {**_parameters_cell("01_train"), "LIVE": "yes", "FORCE": "0", "SEEDS": "2", "POOLINGS": "stride, MAX",
          "MODELS": "improved", "EPOCHS": "3", "OUT": "~/cifarlab-runs", "DATA_DIR": "data", "CLASSES": "vehicles_1"}
    check_parameters("01_train", ns)
    assert (ns["LIVE"], ns["FORCE"]) == (True, False)
    # MODELS, POOLINGS and SEEDS: as the notebook's grid reads them
    from cifarlab.sweep import plan_runs
    plan = plan_runs(ns["CLASSES"], ns["MODELS"], ns["POOLINGS"], ns["SEEDS"], ns["EPOCHS"])
    assert [(c.model, c.pooling, c.seed, c.epochs) for c in plan] == [
        ("improved", p, s, 3) for p in ("stride", "max") for s in (0, 1)]
    assert ns["OUT"] == str(Path.home() / "cifarlab-runs") and ns["DATA_DIR"] == str(tmp_path / "data")
    assert ns["CLASSES"] == [8, 13, 48, 58, 90]
    ns = {**_parameters_cell("02_compare"), "BEST": None}      # None: compare only, nothing saved
    check_parameters("02_compare", ns)
    assert ns["BEST"] is None and Path(ns["RUNS"]).is_absolute()


# (notebook, parameters changed, what the one line must say)
BAD = [
    ("01_train", {"LIVE": "maybe"}, "LIVE='maybe' is not allowed: expected true or false"),
    ("01_train", {"LIVE": "maybe", "OVERRIDES": {"lr": 0.1}}, "LIVE='maybe' is not allowed"),
    ("01_train", {"FORCE": 2}, "FORCE=2 is not allowed: expected true or false"),
    ("01_train", {"OUT": 5}, "OUT=5 is not allowed: expected a folder path"),
    ("01_train", {"OUT": None}, "OUT=None is not allowed"),
    ("01_train", {"POOLINGS": []}, "POOLINGS names nothing: nothing would run"),
    ("01_train", {"POOLINGS": ["max", "mean"]}, "POOLINGS: unknown pooling(s) mean: choose from stride, max, avg"),
    ("01_train", {"POOLINGS": "strid"}, "unknown pooling(s) strid (did you mean stride?)"),
    ("01_train", {"MODELS": ["improvd"]}, "MODELS: unknown model(s) improvd (did you mean improved?)"),
    ("01_train", {"MODELS": [1]}, "MODELS: unknown model(s) 1: choose from"),
    ("01_train", {"SEEDS": 0}, "SEEDS=0: nothing would run"),
    ("01_train", {"SEEDS": []}, "SEEDS names nothing"),
    ("01_train", {"SEEDS": [0, -1]}, "SEEDS=[0, -1]: a seed is a whole number >= 0"),
    ("01_train", {"SEEDS": True}, "SEEDS=True is not allowed"),
    ("01_train", {"EPOCHS": 0}, "EPOCHS=0 is not allowed"),
    ("01_train", {"TEMPLATE_EPOCHS": "ten"}, "TEMPLATE_EPOCHS='ten' is not allowed"),
    ("01_train", {"CLASSES": [3]}, "CLASSES: need at least 2 classes"),
    ("01_train", {"CLASSES": ["aple", "otter"]}, "CLASSES: unknown class name 'aple'"),
    ("01_train", {"OVERRIDES": [("lr", 1)]}, "OVERRIDES=[('lr', 1)]: expected a mapping of config fields"),
    ("01_train", {"OVERRIDES": {"lr": -1}}, "OVERRIDES={'lr': -1}: lr=-1.0 is not allowed"),
    ("01_train", {"OVERRIDES": {"lrr": 0.1}}, "'lrr' (did you mean 'lr'?)"),
    ("01_train", {"OVERRIDES": {"seed": 3}}, "OVERRIDES={'seed': 3}: set seed with SEEDS, not as a recipe override"),
    ("01_train", {"EPOCH": 3, "POOLNG": "avg"},
     "01_train has no parameter EPOCH (did you mean EPOCHS?), POOLNG (did you mean POOLINGS?)"),
    ("00_pick_classes", {"CLASS": [1, 2]}, "00_pick_classes has no parameter CLASS (did you mean CLASSES?)"),
    ("00_pick_classes", {"DATA_DIR": 3}, "DATA_DIR=3 is not allowed"),
    ("02_compare", {"RUNS": None}, "RUNS=None is not allowed"),
    ("02_compare", {"EXPERIMENT": 9}, "EXPERIMENT=9 is not allowed"),
    ("03_reload", {"BEST": None}, "BEST=None is not allowed"),
    ("03_reload", {"EXPECT_CLASSES": ["nothing", "otter"]}, "EXPECT_CLASSES: unknown class name 'nothing'"),
]


@pytest.mark.parametrize("name,changes,message", BAD, ids=[f"{n}-{'-'.join(c)}" for n, c, _ in BAD])
def test_a_bad_parameter_is_one_line_naming_it(name, changes, message):
    ns = {**_parameters_cell(name), **changes}
    before = dict(ns)
    with pytest.raises(ParameterError) as e:
        check_parameters(name, ns)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert "OVERRIDES" in changes or not str(e.value).startswith("OVERRIDES")   # blamed on the right parameter
    assert ns == before                  # nothing replaced when a check fails


def test_a_mistake_in_models_is_blamed_on_models_when_overrides_are_set():
    ns = {**_parameters_cell("01_train"), "MODELS": ["improvd"], "OVERRIDES": {"lr": 0.1}}
    with pytest.raises(ParameterError, match=r"^MODELS: unknown model\(s\) improvd \(did you mean improved\?\)"):
        check_parameters("01_train", ns)


def test_a_mistake_in_your_own_net_is_not_blamed_on_overrides(tmp_path):
    # the own-net file's error names the file; OVERRIDES being set does not make it an override's fault
    ns = {**_parameters_cell("01_train"), "MODELS": [f"{tmp_path / 'mynet.py'}:Net"], "OVERRIDES": {"lr": 0.1}}
    with pytest.raises(ParameterError) as e:
        check_parameters("01_train", ns)
    assert "mynet.py" in str(e.value) and not str(e.value).startswith("OVERRIDES")
    assert "--model" not in str(e.value)      # a notebook has MODELS, not the command line's option


def test_best_that_is_not_a_best_folder_is_refused_before_the_comparison(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("keep me")
    ns = {**_parameters_cell("02_compare"), "BEST": str(tmp_path / "mine")}
    with pytest.raises(ParameterError, match="thesis.txt"):
        check_parameters("02_compare", ns)
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "keep me"


def test_through_papermill_the_check_cell_fails_in_one_line_before_any_data(tmp_path):
    """As make run-all or a TA's papermill call meets it: the misspelt names of the issue, and a flag given as a
    word - the error at the check cell, one line, no cell after it run (no data loaded)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    for params, ename, message in [
        ({"EPOCH": 3, "POOLNG": "avg"}, "ParameterError", "01_train has no parameter EPOCH (did you mean EPOCHS?)"),
        ({"LIVE": "maybe", "USE_PICKER": False}, "ParameterError", "LIVE='maybe' is not allowed"),
    ]:
        out = tmp_path / "out.ipynb"
        with pytest.raises(PapermillExecutionError) as e:
            pm.execute_notebook(str(NOTEBOOKS / "01_train.ipynb"), str(out), parameters=params, kernel_name="python3",
                                progress_bar=False, cwd=str(tmp_path))
        assert e.value.ename == ename and message in e.value.evalue
        cells = json.loads(out.read_text())["cells"]
        errored = lambda c: any(o.get("output_type") == "error" for o in c.get("outputs", []))
        (failed,) = [i for i, c in enumerate(cells) if errored(c)]
        assert 'check_parameters("01_train", globals())' in "".join(cells[failed]["source"])
        (error,) = [o for o in cells[failed]["outputs"] if o.get("output_type") == "error"]
        assert len(error["traceback"]) == 1 and error["traceback"][0].startswith(f"{ename}: ")
        assert all(c.get("execution_count") is None for c in cells[failed + 1:] if c["cell_type"] == "code")
        assert not (tmp_path / "out" / "runs").exists()
