"""The docs name only what exists: every `make TARGET VAR=...`, every `python benchmarks/x.py --opt` and
`python scripts/x.py --opt`, and every relative link in README.md, CONTRIBUTING.md, docs/*.md and the
benchmarks' results files. (`python -m cifarlab X --opt` hints in these files are checked with the
library's own hints: tests/test_records_cli.py.) A renamed target, variable, option or file fails here
instead of in a student's terminal."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
LINKED = DOCS + sorted((ROOT / "benchmarks").glob("*.md"))
MAKEFILE = (ROOT / "Makefile").read_text()


def _code(text: str) -> list[str]:
    """What a reader would type: fenced code blocks and `inline code`, never prose (where "make" is a verb)."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
    return fenced + inline


MAKE_CALL = re.compile(r"(?:^|[\s;&(|])make\s+([a-z][\w-]*)"                      # make TARGET
                       r"((?:\s+[A-Z_][A-Z0-9_]*=(?:\"[^\"]*\"|'[^']*'|\S*))*)")     # VAR=value VAR="a b" ...


def _make_calls(text: str) -> list[tuple[str, list[str]]]:
    """(target, [VAR, ...]) for every `make target VAR=value ...` in the code of ``text``."""
    return [(m.group(1), re.findall(r"([A-Z_][A-Z0-9_]*)=", m.group(2)))
            for code in _code(text) for line in code.splitlines() for m in MAKE_CALL.finditer(line)]


def test_the_docs_are_there():
    assert all(p.is_file() for p in DOCS) and len(DOCS) >= 5
    # the README stays short enough to read in five minutes; the rest is in docs/ and CONTRIBUTING.md
    assert len((ROOT / "README.md").read_bytes()) <= 10_500


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_make_target_and_variable_the_docs_name_exists(doc):
    calls = _make_calls(doc.read_text())
    variables = set(re.findall(r"^([A-Z_][A-Z0-9_]*)\s*[:?+]?=", MAKEFILE, re.M))
    for target, names in calls:
        for name in names:
            assert name in variables, f"{doc.name}: `make {target} {name}=...`: the Makefile has no variable {name}"
    if not shutil.which("make"):
        pytest.skip("needs make")
    for target in {t for t, _ in calls}:
        # -n: print the recipe, run nothing; -o: as if the environment were set up (no venv is made)
        r = subprocess.run(["make", "-n", "-o", ".venv/.installed", target], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, f"{doc.name}: `make {target}`: {r.stderr.strip()}"


def test_the_make_scan_finds_what_readers_type():
    text = "Run `make run-all CLASSES=\"a b\" SEEDS=3` or\n```bash\nmake lab   # hi\nmake sweep ENGINE=ray\n```\n" \
           "and make sure (prose) is not a target."
    assert sorted(_make_calls(text)) == [("lab", []), ("run-all", ["CLASSES", "SEEDS"]), ("sweep", ["ENGINE"])]
    calls = [c for doc in DOCS for c in _make_calls(doc.read_text())]
    assert {"run-all", "lab", "test", "test-all", "web"} <= {t for t, _ in calls}
    assert any(t == "run-all" and v for t, v in calls)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_script_option_the_docs_name_exists(doc):
    """`python benchmarks/speed.py --dry-run`, `python scripts/run_all.py --seeds 1`: the script is there and
    declares the option (argparse, in its source)."""
    for code in _code(doc.read_text()):
        for script, rest in re.findall(r"python3? ((?:benchmarks|scripts)/[\w.]+\.py)([^`\n|#;]*)", code):
            path = ROOT / script
            assert path.is_file(), f"{doc.name} names {script}, which does not exist"
            source = path.read_text()
            for opt in re.findall(r"(--[a-z][a-z-]*)", rest):
                assert f'"{opt}"' in source, f"{doc.name}: `python {script} ... {opt}`: {script} has no option {opt}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def dead_links(doc: Path, root: Path = ROOT) -> list[str]:
    """The relative links in ``doc`` (outside code blocks) that point at no file, outside ``root``, or at a
    heading the target does not have."""
    text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.M | re.S)
    dead = []
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z][a-z+.-]*:", link):          # https:, mailto: - not ours to check offline
            continue
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        if not path.exists() or not (path == root or root in path.parents):
            dead.append(link)
        elif anchor and path.suffix == ".md" and anchor not in {_slug(h) for h in
                                                                re.findall(r"^#+ (.*)$", path.read_text(), re.M)}:
            dead.append(link)
    return dead


@pytest.mark.parametrize("doc", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_that_exists(doc):
    assert dead_links(doc) == [], f"{doc.relative_to(ROOT)}: dead links"


def test_the_link_check_catches_a_dead_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "ok.md").write_text("# Where results go\n")
    doc = tmp_path / "docs" / "x.md"
    doc.write_text("[a](../ok.md) [b](../ok.md#where-results-go) [c](missing.md) [d](../ok.md#nowhere) "
                   "[e](https://example.org/x) [f](../../outside.md)\n```\n[g](in-code.md)\n```\n")
    (tmp_path.parent / "outside.md").write_text("x")
    assert dead_links(doc, root=tmp_path) == ["missing.md", "../ok.md#nowhere", "../../outside.md"]
