"""The committed notebooks: kept clean, and their Colab parts generated from one repository URL.

    python scripts/nbtool.py clean < in.ipynb > out.ipynb   # the git filter (`make setup` installs it)
    python scripts/nbtool.py sync                           # rewrite notebooks/*.ipynb (`make notebooks`)
    python scripts/nbtool.py check                          # exit 1 when any notebook differs from sync's

``clean``: no outputs, no execution counts, no widget state, no per-cell metadata but papermill's
``tags``, the kernelspec and language info every notebook commits (``python3``: Colab and a JupyterLab
started from the project's venv both run the right Python for it), in the layout Jupyter itself
writes. Installed as a git clean filter, it keeps what Jupyter's autosave writes into a notebook
(outputs, widget state, another kernel) out of commits and out of ``git status``; the notebook on
disk keeps its outputs.

``sync``: ``clean``, plus the parts that depend on the repository URL - the *Open in Colab* badge in
the first cell and the setup cell (the ``%pip install`` where cifarlab is missing) - generated from
``pyproject.toml``'s ``[project.urls] Repository``, the one place the URL is written by hand.

Standard library only (the git filter runs with whatever ``python3`` git finds).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BRANCH = "main"                                     # the branch Colab opens the notebooks from
PLACEHOLDER = "https://github.com/your-org/cifarlab"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
METADATA = {"colab": {"provenance": []}, "kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_RE = re.compile(r"\[!\[Open In Colab\]\(" + re.escape(BADGE_IMAGE) + r"\)\]\(([^)]*)\)")

SETUP_CELL = '''\
# Setup. Where cifarlab is missing (Colab), pip installs it from the lab's repository and leaves the packages
# the runtime has (torch, numpy, ipywidgets 7.7.1, ...) as they are. The URL is pyproject.toml's [project.urls]
# Repository, written here by `make notebooks`.{placeholder_note}
import importlib.util   # next line: %pip install cifarlab where it is missing (Colab)
if not importlib.util.find_spec("cifarlab"): get_ipython().run_line_magic("pip", 'install -q "cifarlab @ git+{url}"')
import cifarlab; cifarlab.notebook_setup()   # versions, device; cifarlab errors shown as one line'''
# While pyproject still has the placeholder, pip fails on it ("could not read Username for 'https://github.com'",
# then No module named 'cifarlab'): the cell says what to do instead.
PLACEHOLDER_NOTE = """
# your-org is a placeholder: pip cannot install from it. Put the URL of your fork (or the course's repository)."""


# --- the repository URL ------------------------------------------------------------------------
def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    text = Path(pyproject).read_text()
    try:
        import tomllib
        url = tomllib.loads(text)["project"]["urls"]["Repository"]
    except ImportError:  # Python 3.10: the one line is enough
        section = text.split("[project.urls]", 1)[1].split("\n[", 1)[0]
        url = re.search(r'^Repository\s*=\s*"([^"]+)"', section, re.M).group(1)
    return url.rstrip("/")


def colab_url(repo_url: str, notebook: str) -> str:
    m = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?", repo_url)
    if not m:
        raise ValueError(f"Colab opens notebooks from GitHub only: {repo_url!r} is not https://github.com/OWNER/REPO")
    return f"https://colab.research.google.com/github/{m[1]}/{m[2]}/blob/{BRANCH}/notebooks/{notebook}"


def badge(repo_url: str, notebook: str) -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(repo_url, notebook)})"


def setup_cell(repo_url: str) -> str:
    return SETUP_CELL.format(url=repo_url, placeholder_note=PLACEHOLDER_NOTE if repo_url == PLACEHOLDER else "")


# --- notebooks as JSON -------------------------------------------------------------------------
def source(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def dumps(nb: dict) -> str:
    """The layout Jupyter writes (nbformat): sorted keys, indent 1, sources as lists of lines."""
    for cell in nb.get("cells", []):
        cell["source"] = _lines(source(cell))
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def clean(nb: dict) -> dict:
    for cell in nb.get("cells", []):
        tags = cell.get("metadata", {}).get("tags")
        cell["metadata"] = {"tags": tags} if tags else {}
        if not cell.get("attachments"):
            cell.pop("attachments", None)
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb["metadata"] = json.loads(json.dumps(METADATA))
    return nb


def setup_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code" and "cifarlab.notebook_setup()" in source(c)]


def sync(nb: dict, name: str, repo_url: str) -> dict:
    clean(nb)
    (cell,) = setup_cells(nb) or [None]
    if cell is None:
        raise ValueError(f"{name}: no setup cell (a code cell calling cifarlab.notebook_setup())")
    cell["source"] = setup_cell(repo_url)
    first = nb["cells"][0]
    if first["cell_type"] != "markdown" or len(BADGE_RE.findall(source(first))) != 1:
        raise ValueError(f"{name}: the first cell must be markdown with one Open In Colab badge")
    first["source"] = BADGE_RE.sub(lambda _: badge(repo_url, name), source(first))
    return nb


def check(paths=None, repo_url: str | None = None) -> list[str]:
    """What differs from ``sync`` in each notebook (empty: all in order)."""
    repo_url = repo_url or repository_url()
    problems = []
    for path in paths or sorted(NOTEBOOKS.glob("*.ipynb")):
        path = Path(path)
        text = path.read_text()
        try:
            want = dumps(sync(json.loads(text), path.name, repo_url))
        except ValueError as e:
            problems.append(str(e))
            continue
        if want != text:
            problems.append(f"{path.name} differs from what `make notebooks` writes (its Colab badge or setup "
                            f"cell does not match {repo_url}, or it carries outputs or other metadata)")
    return problems


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cmd = argv[0] if argv else "check"
    if cmd == "clean":
        data = sys.stdin.read()
        try:
            sys.stdout.write(dumps(clean(json.loads(data))))
        except (ValueError, KeyError):
            sys.stdout.write(data)  # not a notebook we can read: leave it to the user
        return 0
    if cmd == "sync":
        url = repository_url()
        for path in sorted(NOTEBOOKS.glob("*.ipynb")):
            text = path.read_text()
            new = dumps(sync(json.loads(text), path.name, url))
            if new != text:
                path.write_text(new)
                print(f"updated {path.relative_to(ROOT)}")
        return 0
    if cmd == "check":
        problems = check()
        for p in problems:
            print(p, file=sys.stderr)
        return 1 if problems else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
