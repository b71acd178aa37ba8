"""Writing to disk without ever losing what is there: the one place that does file-system safety, for the
data, the run records, the backbones and ``best/`` alike (what each may replace: docs/records.md).

* A folder is built in a hidden staging folder (:func:`building`) and moved into place by a rename
  (:func:`publish_dir`) under a lock on its parent (:func:`locked`): a crash never leaves a half folder
  that looks complete, and no cifarlab process sees a gap.
* A folder is replaced only when it is this project's own output of the same kind, recognised by its
  marker (:class:`Owned`, :func:`check_replaceable`); anything else there is refused, and nothing is touched.
* Output locations are checked before any work starts (:func:`check_writable_dir`), so a typo in
  ``--out`` costs a second, not a trained model; every path a user gives goes through :func:`user_path`
  first: what is checked is what is used and printed.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CifarlabError

STAGING_PREFIX = ".tmp-"   # staging folders; readers skip them
ASIDE_PREFIX = ".old-"     # a replaced folder, for the instant between two renames


class OutputError(CifarlabError, ValueError):
    """An output location cannot be used; the message says what is there and what to pass instead."""


class WriteError(OutputError):
    """Writing failed for a reason outside cifarlab (no space, quota, read-only, name too long): a failed run."""

    exit_code = 1


# errno -> what it means for the user; anything else keeps its traceback (a bug to see)
_WRITE_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is used up",
                 errno.EROFS: "the file system is read-only", errno.ENAMETOOLONG: "a file name is too long",
                 errno.EACCES: "permission denied"}


def user_path(value, option: str) -> Path:
    """A user's path (option, notebook parameter, environment variable) as used, checked and printed: ``~``
    expanded, made absolute from the working directory."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value).strip():
        raise OutputError(f"{option} {value!r} is not a path: give a folder path as a string, e.g. 'runs'")
    return Path(os.path.abspath(os.path.expanduser(os.fspath(value))))


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


def read_json(path, what: str, error: type):
    """Read a JSON file its callers found there; an unreadable one is an ``error`` that names the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid JSON ({e}); this {what} was damaged or edited by hand. "
                          f"Restore it, or delete {path.parent} and create it again.") from None


def check_writable_dir(path, option: str = "--out") -> Path:
    """Check, before any work, that ``path`` is (or can become) a writable folder.

    Raises :class:`OutputError` naming ``option`` when it is a file, lies under a file, or is
    not writable, or too long for the file system (with room for what is written inside). Creates nothing."""
    path = user_path(path, option)
    try:   # first: asking about too long a path is itself an error
        name_max, path_max = os.pathconf(path.anchor, "PC_NAME_MAX"), os.pathconf(path.anchor, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    room = 200   # a staging folder (~95 bytes) and a record's name and files inside it
    if any(len(os.fsencode(p)) > name_max for p in path.parts) or len(os.fsencode(str(path))) + room > path_max:
        raise OutputError(f"{option} {path} is too long for this file system (at most {name_max} bytes a name, "
                          f"{path_max - room} in all, leaving room for the files written inside): pass a shorter path")
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is a file, not a folder: pass a folder path")
    probe = path
    while not probe.exists() and probe.parent != probe:   # the nearest existing folder: where mkdir would start
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

    markers: tuple                                # files only this project writes there (any one will do)
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
    if not any((target / m).is_file() for m in owned.markers):
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputError(f"{owned.option} {target} already holds files that cifarlab did not write there ({shown}); "
                          f"it is not a previous {owned.kind} folder, so it is left alone. Pass a new folder path "
                          f"(it is created) or a previous {owned.kind} folder.")
    foreign = [e for e in entries if e not in owned.allowed]
    if foreign:
        raise OutputError(f"{owned.option} {target} is a previous {owned.kind} folder, but it also holds files "
                          f"cifarlab did not write ({', '.join(foreign[:5])}); move them out first, or pass "
                          f"another folder.")


@contextlib.contextmanager
def building(parent, name: str):
    """A fresh hidden staging folder inside ``parent`` (created) to build ``parent/name`` in, removed whatever
    happens; a write failing for want of space, quota or a writable disk is one :class:`WriteError` naming
    the path and the reason."""
    tmp = None
    try:
        Path(parent).mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name[:80]}-", dir=parent))
        # the permissions a plain mkdir gives (mkdtemp makes 0700: a TA or a web server could not read the
        # published folder); reading the umask means setting it, so it is put back at once
        umask = os.umask(0o022)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        yield tmp
    except OSError as e:
        if e.errno not in _WRITE_ERRORS:
            raise
        raise WriteError(f"could not write {Path(parent) / name} ({_WRITE_ERRORS[e.errno]}: {e.filename or parent}); "
                         f"nothing already saved was changed. Free space or pass another folder, and run again"
                         ) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)   # gone already once published


@contextlib.contextmanager
def locked(folder, shared: bool = False):
    """flock on ``folder`` itself (no lock file): exclusive to replace an entry, shared to read entries. Why a
    lock, not a gapless publish: a replace is two renames, and the one-step swap (renameat2 RENAME_EXCHANGE)
    has no portable Python call; the lock makes the two one step for every cifarlab process on this machine.
    Without flock (Windows) or a folder, nothing is locked."""
    fd = None
    try:
        import fcntl
        fd = os.open(folder, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    except (ImportError, OSError):
        pass
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)   # releases the lock


def read_npz(path, error: type, fix: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (never pickles); missing or damaged is one ``error`` naming it, with ``fix``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise error(f"{path} is missing. {fix}") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise error(f"{path} is damaged ({type(e).__name__}: {e}). {fix}") from None


def publish_dir(tmp, target, owned: Owned | None = None) -> Path:
    """Move the finished folder ``tmp`` to ``target``.

    A previous ``target`` is replaced only when ``owned`` says it is ours, and only once the new folder is
    complete: rename aside, rename in, delete. Without ``owned`` an existing target is never replaced. Done
    under :func:`locked` on the parent: a concurrent publisher waits, a reader never sees the gap between the
    two renames."""
    target = Path(target)
    aside = None
    with locked(target.parent):
        if target.exists() or target.is_symlink():
            if owned is None:
                raise OutputError(f"{target} already exists; it is left alone. Move it away and run again.")
            check_replaceable(target, owned)
            aside = Path(tempfile.mkdtemp(prefix=f"{ASIDE_PREFIX}{target.name[:80]}-", dir=target.parent))
            os.replace(target, aside)  # onto the fresh empty folder: a unique name, atomically
        try:
            os.replace(tmp, target)
        except BaseException as e:
            if aside is not None:
                try:
                    os.replace(aside, target)  # put the previous folder back
                except OSError:
                    raise OutputError(f"could not publish {target} ({e}), nor put the previous one back: it is "
                                      f"safe in {aside}; move it back by hand") from e
            raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)   # hidden (.old-), so readers skip it meanwhile
    return target

