"""Installing into a running notebook kernel (Colab) without disturbing it.

The notebooks' first cell, where cifarlab is not importable (Colab, a fresh environment), installs
cifarlab alone from the repository (``pip install --no-deps git+<REPO_URL>``: it is pure Python, and
``import cifarlab`` needs nothing else), then calls :func:`install_missing`, which

* installs only the requirements that are not installed at all (in Colab: onnx, onnxscript,
  onnxruntime) - an installed package is never upgraded, even below cifarlab's own lower bound:
  Colab's ipywidgets 7.7.1 is the right one for Colab's widget front end;
* pins, for pip, every distribution this kernel has already imported, and the big ones (torch,
  numpy, ipywidgets, ...), to the version installed: a missing package that would need another
  numpy fails to install with a clear message instead of replacing the numpy in memory;
* says whether the runtime needs a restart, and why: only when a package the kernel had already
  imported changed on disk (the kernel would go on running the old code).

``papermill`` is left out: only ``make run-all`` uses it.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import CifarlabError

NOT_NEEDED_IN_A_NOTEBOOK = {"papermill"}
# Never upgraded by the install cell, imported yet or not (what Colab ships and a reinstall would break).
KEEP = ("torch", "torchvision", "numpy", "ipywidgets", "ipykernel", "ipython", "matplotlib", "pillow",
        "scikit-learn", "scipy", "tqdm", "traitlets", "jupyter-client", "tornado", "pyzmq")


class InstallError(CifarlabError):
    exit_code = 1


class RestartNeeded(CifarlabError):
    """pip changed a package that the running kernel has already imported."""

    exit_code = 1


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(dist: str = "cifarlab") -> list[tuple[str, str]]:
    """``(name, requirement)`` of ``dist``'s run-time requirements (no extras), from its metadata."""
    out = []
    for req in md.requires(dist) or []:
        spec, _, marker = req.partition(";")
        if "extra" in marker:
            continue
        spec = spec.strip()
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec).group(0)
        out.append((_canonical(name), spec))
    return out


def installed_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def loaded_distributions() -> dict[str, str]:
    """``{distribution: version}`` for every installed distribution with a module imported in this process."""
    owners = md.packages_distributions()
    top = {m.split(".")[0] for m in list(sys.modules)}
    found = {}
    for mod in top & set(owners):
        for dist in owners[mod]:
            version = installed_version(dist)
            if version is not None:
                found[_canonical(dist)] = version
    return found


def missing(dist: str = "cifarlab") -> list[str]:
    """The requirements of ``dist`` that are not installed at all (and are needed in a notebook)."""
    return [spec for name, spec in requirements(dist)
            if name not in NOT_NEEDED_IN_A_NOTEBOOK and installed_version(name) is None]


def install_missing(dist: str = "cifarlab", run=None, quiet: bool = False) -> list[str]:
    """Install what :func:`missing` lists, changing nothing that is installed; returns what it installed.

    Raises :class:`InstallError` when pip cannot (its last lines say why) and :class:`RestartNeeded`
    when, all the same, a package this kernel had imported changed."""
    run = run or subprocess.run
    need = missing(dist)
    if not need:
        return []
    loaded = loaded_distributions()
    loaded.pop(_canonical(dist), None)
    pins = dict(loaded)
    for name in KEEP:
        version = installed_version(name)
        if version is not None:
            pins.setdefault(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
        if not quiet:
            print(f"installing what is missing: {' '.join(need)} (keeping the {len(pins)} packages this "
                  f"kernel has loaded or ships as they are)", flush=True)
        r = run([sys.executable, "-m", "pip", "install", "-q", "-c", str(constraints), *need],
                capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-8:])
        raise InstallError(f"pip could not install {', '.join(need)} without changing a package this kernel "
                           f"already has (nothing was changed). pip said:\n{tail}")
    importlib.invalidate_caches()
    changed = {name: (old, installed_version(name)) for name, old in loaded.items()
               if installed_version(name) != old}
    if changed:
        what = ", ".join(f"{n} {a} -> {b}" for n, (a, b) in sorted(changed.items()))
        raise RestartNeeded(f"restart the runtime (Colab: Runtime > Restart session), then run the notebook from "
                            f"the top again: pip changed {what}, which this kernel had already imported, and the "
                            f"kernel would go on running the old version. cifarlab stays installed.")
    if not quiet:
        print(f"installed {', '.join(need)}; nothing this kernel had loaded changed: no restart needed", flush=True)
    return need


__all__ = ["install_missing", "missing", "requirements", "loaded_distributions", "InstallError", "RestartNeeded"]
