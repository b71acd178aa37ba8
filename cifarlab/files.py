"""Writing to disk without ever losing what is there: the one place that does file-system safety.

Three rules, used by the data layer, the run records and the ``best/`` folder alike:

* A folder is built in a hidden staging folder beside its target and moved into place by a
  rename (:func:`staging_dir`, :func:`publish_dir`): a crash never leaves a half folder that
  looks complete.
* A folder is replaced only when it is this project's own output of the same kind, recognised
  by its marker (:class:`Owned`, :func:`check_replaceable`); anything else there - a user's folder, a runs folder, a
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
from dataclasses import dataclass
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
        raise error(f"{path} is missing; this {what} is incomplete. Create it again.") from None
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


@dataclass(frozen=True)
class Owned:
    """What makes an existing folder this project's own output, so that it may be replaced: its marker
    file, and the only files written there."""

    marker: str
    allowed: frozenset
    option: str                                   # how the user named the place: "--out", "--best"
    kind: str                                     # "run record", "best"


def check_replaceable(target, owned: Owned) -> None:
    """Refuse to replace ``target`` unless it is missing, an empty folder, or a previous output of this
    kind (its marker present) holding only the files this project writes there."""
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return
    if target.is_symlink() or not target.is_dir():
        raise OutputError(f"{owned.option} {target} is {'a link' if target.is_symlink() else 'a file'}, not a "
                          f"{owned.kind} folder; nothing was changed. Pass a new folder path (it is created).")
    entries = sorted(p.name for p in target.iterdir())
    if not entries:
        return
    if not (target / owned.marker).is_file():
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputError(f"{owned.option} {target} already holds files that cifarlab did not write there ({shown}); "
                          f"it is not a previous {owned.kind} folder, so it is left alone. Pass a new folder path "
                          f"(it is created) or a previous {owned.kind} folder.")
    foreign = [e for e in entries if e not in owned.allowed]
    if foreign:
        raise OutputError(f"{owned.option} {target} is a previous {owned.kind} folder, but it also holds files "
                          f"cifarlab did not write ({', '.join(foreign[:5])}); move them out first, or pass "
                          f"another folder.")


def staging_dir(parent, name: str) -> Path:
    """A fresh hidden folder inside ``parent`` (created) to build ``name`` in."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name[:80]}-", dir=parent))


def publish_dir(tmp, target, owned: Owned | None = None) -> Path:
    """Move the finished folder ``tmp`` to ``target``.

    A previous ``target`` is replaced only when ``owned`` says it is ours (checked here, and checked
    again once it has been moved aside, so nothing that appeared meanwhile is lost), and only once the
    new folder is complete: rename aside, rename in, delete. Without ``owned`` an existing target is
    never replaced."""
    target = Path(target)
    aside = None
    if target.exists() or target.is_symlink():
        if owned is None:
            raise OutputError(f"{target} already exists; it is left alone. Move it away and run again.")
        check_replaceable(target, owned)
        aside = Path(tempfile.mkdtemp(prefix=f"{ASIDE_PREFIX}{target.name[:80]}-", dir=target.parent))
        os.replace(target, aside)  # onto the fresh empty folder: a unique name, atomically
        try:
            check_replaceable(aside, owned)
        except OutputError:
            os.replace(aside, target)
            raise
    try:
        os.replace(tmp, target)
    except BaseException as e:
        if aside is not None:
            try:
                os.replace(aside, target)  # put the previous folder back
            except OSError:
                raise OutputError(f"could not publish {target} ({e}), nor put the previous one back: it is safe "
                                  f"in {aside}; move it back by hand") from e
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return target


def is_hidden_work(path: Path) -> bool:
    """Staging or aside folders: never read as outputs."""
    return any(part.startswith((STAGING_PREFIX, ASIDE_PREFIX)) for part in Path(path).parts)
