"""The library's shape: one job per module, imports that point one way (no cycle, also through imports
inside functions), and lint that passes. Run alone: python -m pytest tests/test_structure.py -q"""
import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "cifarlab"


def import_graph() -> dict[str, set[str]]:
    """module -> the cifarlab modules it imports anywhere in its source (top level or inside functions)."""
    modules = {p.stem for p in PKG.glob("*.py")}
    graph = {}
    for path in PKG.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("cifarlab")):
                mod = (node.module or "").removeprefix("cifarlab").lstrip(".")
                if mod:
                    deps.add(mod.split(".")[0])
                else:  # from . import x: a module, or a name from the package itself
                    deps |= {a.name if a.name in modules else "__init__" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("cifarlab.")}
        graph[path.stem] = deps - {path.stem}
    return graph


def find_cycle(graph):
    state = {}

    def visit(n, stack):
        state[n] = "open"
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "open":
                return stack + [n, m]
            if m not in state and (c := visit(m, stack + [n])):
                return c
        state[n] = "done"
        return None
    for n in sorted(graph):
        if n not in state and (c := visit(n, [])):
            return c
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"config", "hardware", "data", "models", "engine", "records", "comparison", "export", "figures",
            "files"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_layers_point_one_way():
    g = import_graph()
    assert "export" not in g["records"] and "comparison" not in g["records"]  # records are read by both
    assert g["figures"] == set() and g["errors"] == set()                    # leaves
    assert g["files"] <= {"errors"} and "data" not in g["models"]
    assert g["hardware"] <= {"config"}   # the machine's answers (device, bf16): asked by the loop, asking nothing of it
    assert "/proc/cpuinfo" not in (PKG / "engine.py").read_text(), "hardware sniffing belongs in hardware.py"
    # every plot is drawn in figures.py: nothing else builds a matplotlib Figure
    for path in PKG.glob("*.py"):
        if path.stem != "figures":
            assert "Figure(" not in path.read_text(), f"{path.name} draws a figure outside figures.py"


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_lint_passes():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", str(PKG.parent)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]


def test_no_merge_conflict_markers_anywhere():
    root = PKG.parent
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True).stdout.split()
    if not files:  # not a git checkout: look at the project's own folders
        files = [str(p.relative_to(root)) for d in ("cifarlab", "tests", "scripts", "benchmarks", "notebooks", ".ci")
                 for p in (root / d).rglob("*") if p.is_file()] + ["README.md", "Makefile", "pyproject.toml"]
    bad = []
    for name in files:
        path = root / name
        if not path.is_file() or path.suffix in (".npz", ".png", ".gz"):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        bad += [f"{name}:{i}" for i, line in enumerate(text.splitlines(), 1)
                if line.startswith(("<<<<<<< ", ">>>>>>> ")) or line == "======="]
    assert not bad, bad
