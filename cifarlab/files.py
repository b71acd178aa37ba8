"""Writing to disk without ever losing what is there: the one place that does file-system safety.

Three rules, used by the data layer, the run records and the ``best/`` folder alike:

* A folder is built in a hidden staging folder beside its target and moved into place by a
  rename (:func:`staging_dir`, :func:`publish_dir`): a crash never leaves a half folder that
  looks complete.
* A folder is replaced only when it is this project's own output of the same kind, recognised
  by its marker (:func:`owned_by_us`); anything else there - a user's folder, a runs folder, a
  file - is refused with :class:`OutputError`, and nothing is touched.
* Output locations are checked before any work starts (:func:`check_writable_dir`), so a typo
  in ``--out`` costs a second, not a trained model.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import CifarlabError

STAGING_PREFIX = ".tmp-"   # staging folders; readers skip them
ASIDE_PREFIX = ".old-"     # a replaced folder, for the instant between two renames


class OutputError(CifarlabError, ValueError):
    """An output location cannot be used; the message says what is there and what to pass instead."""


def clean_json(obj):
    """JSON-safe copy: NaN/inf become null, numpy scalars and arrays become Python numbers and lists."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path, obj) -> None:
    Path(path).write_text(json.dumps(clean_json(obj), indent=2, allow_nan=False) + "\n")


def read_json(path, what: str = "file", error: type = OutputError):
    """Read a JSON file; a missing or unreadable one is an error (of type ``error``) that names the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid JSON ({e}); this {what} was damaged or edited by hand. "
                          f"Restore it, or delete {path.parent} and create it again.") from None


def check_writable_dir(path, option: str = "--out") -> Path:
    """Check, before any work, that ``path`` is (or can become) a writable folder.

    Raises :class:`OutputError` naming ``option`` when it is a file, lies under a file, or is
    not writable. Creates nothing."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is a file, not a folder: pass a folder path")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(f"{option} {path} lies under {probe}, which is a file: pass a folder path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: {probe} is not writable for this user; pass a folder you can write to")
    return path


def owned_by_us(folder: Path, marker: str) -> bool:
    """Whether ``folder`` carries this project's ``marker`` file (so it is ours to replace)."""
    return (Path(folder) / marker).is_file()


def check_replaceable(target, marker: str, allowed: set[str], option: str, kind: str) -> None:
    """Refuse to replace ``target`` unless it is missing, an empty folder, or a previous output of
    this kind (``marker`` present) holding only the files this project writes there."""
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return
    if target.is_symlink() or not target.is_dir():
        raise OutputError(f"{option} {target} is {'a link' if target.is_symlink() else 'a file'}, not a {kind} "
                          f"folder; nothing was changed. Pass a new folder path (it is created).")
    entries = sorted(p.name for p in target.iterdir())
    if not entries:
        return
    if not owned_by_us(target, marker):
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputError(f"{option} {target} already holds files that cifarlab did not write there ({shown}); "
                          f"it is not a previous {kind} folder, so it is left alone. Pass a new folder path "
                          f"(it is created) or a previous {kind} folder.")
    foreign = [e for e in entries if e not in allowed]
    if foreign:
        raise OutputError(f"{option} {target} is a previous {kind} folder, but it also holds files cifarlab did not "
                          f"write ({', '.join(foreign[:5])}); move them out first, or pass another folder.")


def staging_dir(parent, name: str) -> Path:
    """A fresh hidden folder inside ``parent`` (created) to build ``name`` in."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name[:80]}-", dir=parent))


def publish_dir(tmp, target) -> Path:
    """Move the finished folder ``tmp`` to ``target``; a previous ``target`` (which the caller has
    checked is ours) is replaced only once the new one is complete: rename aside, rename in, delete."""
    target = Path(target)
    old = None
    if target.exists():
        old = target.with_name(f"{ASIDE_PREFIX}{target.name}-{os.getpid()}")
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)  # put the previous folder back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def is_hidden_work(path: Path) -> bool:
    """Staging or aside folders: never read as outputs."""
    return any(part.startswith((STAGING_PREFIX, ASIDE_PREFIX)) for part in Path(path).parts)
