"""Run records: one folder per run (``<out>/<run_name>/``), everything needed to compare and reproduce runs
later. Its files (:data:`RECORD_FILES`, and for your own net :data:`OWN_NET_FILES`), how it is named, staged
and replaced (never by a diverged run): docs/records.md and docs/statistics.md.

A record is *complete* when every file its readers need (:data:`NEEDED`) is there and readable,
decided once (:func:`load_record`) for resume, compare, sweeps and reload; an incomplete one is listed
with what is missing, never reused, and trained again (:func:`reusable_record`). Record folders that
are links are refused everywhere (train, sweeps) and listed as not read by compare.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError, RunConfig
from .figures import confusion_figure, plot_curves
from .files import (
    ASIDE_PREFIX,
    STAGING_PREFIX,
    OutputError,
    Owned,
    building,
    check_replaceable,
    locked,
    publish_dir,
    read_npz,
    user_path,
    write_json,
)
from .models import load_model
from .ownnet import save_exported, source_text

RECORD_FILES = ("config.json", "metrics.json", "history.json", "model.pt", "curves.png",
                "report_train.txt", "report_test.txt", "confusion.png", "test_predictions.npz",
                "val_predictions.npz")
OWN_NET_FILES = ("model.pt2", "net.py")   # a record of your own net has these too
RECORD_MARKER = "metrics.json"      # written last: a finished run
# What the readers of a record need, by its status: resume, compare, sweeps, show_record and best/ read these.
NEEDED = {"ok": RECORD_FILES, "diverged": ("config.json", "metrics.json", "history.json")}
# metrics.json keys the comparison, summaries and best/ read: without them a record is damaged.
OK_KEYS = ("model", "pooling", "seed", "epochs", "device", "classes", "train_seconds", "train_acc", "val_acc",
           "test_acc", "n_val", "n_test", "overfitting")
DIVERGED_SUFFIX = "_diverged"
# A folder holding either file (and record files only) is a record, complete or not: it may be replaced.
RECORD = Owned(("config.json", RECORD_MARKER), frozenset(RECORD_FILES + OWN_NET_FILES), "--out", "run record")


class RecordError(OutputError):
    """A record folder that cannot be read as it is; the message names the file and what to do."""


class IncompleteRecord(RecordError):
    """A record missing a file its readers need (or holding an unreadable one): trained again, never reused."""


def _config_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def identity_fields(cfg: RunConfig) -> dict:
    """What metrics.json carries to say which run, configuration and experiment it belongs to."""
    return {"run_id": cfg.run_id, "config_id": cfg.config_id, "experiment_id": cfg.experiment_id,
            "configuration": cfg.configuration_label, "experiment": cfg.experiment_label,
            "experiment_name": cfg.experiment_name}


def record_path(out, cfg: RunConfig) -> Path:
    return Path(out) / cfg.run_name


def record_target(out, cfg: RunConfig, ok: bool) -> Path:
    """Where a record of ``cfg`` goes: ``out/<run_name>``, except that a diverged run (``ok`` False) goes to
    ``<run_name>_diverged`` when a complete record of the same identity is already there, so the good
    one is never replaced by a failed one. Refused when the place holds something this project did not write.
    Read under the runs folder's shared lock: another process replacing that record meanwhile is never half seen."""
    target = record_path(out, cfg)
    with locked(Path(out), shared=True):
        if not ok and (target / RECORD_MARKER).is_file() and _status(target) == "ok":
            target = target.with_name(target.name + DIVERGED_SUFFIX)
        check_replaceable(target, RECORD)
    return target


def write_record(out, result, evaluation, subset) -> Path:
    """Write the record of a finished (or diverged) run under ``out``, atomically; return its folder.

    ``out`` is checked already (experiment.run); a diverged run (``evaluation`` None) goes beside a complete
    record of the same identity (:func:`record_target`)."""
    cfg: RunConfig = result.config
    target = record_target(out, cfg, ok=evaluation is not None)
    with building(out, target.name) as tmp:
        config_text = cfg.to_json() + "\n"
        (tmp / "config.json").write_text(config_text)
        write_json(tmp / "history.json", result.history)
        if cfg.net:
            (tmp / "net.py").write_text(source_text(cfg.net))
        plot_curves(result.history, cfg.title, result.best_epoch).savefig(tmp / "curves.png", dpi=100)
        ident = {**identity_fields(cfg), "config_sha256": _config_sha(config_text)}
        if result.backbone:   # which pretrained backbone the run started from
            ident["backbone"] = result.backbone
        if evaluation is None:  # a diverged run: keep what there is, say what happened
            metrics = {"status": "diverged", "error": result.diverged, "model": cfg.model, "pooling": cfg.pooling,
                       "seed": cfg.seed, "epochs": result.epochs_run, "device": result.device,
                       "train_seconds": result.train_seconds, **ident, "classes": subset.classes.to_dict()}
        else:
            metrics = {"status": "ok", **evaluation.metrics, **ident}
            buf = io.BytesIO()   # torch's own file writer hides why a write failed (a full disk): Python's says it
            torch.save(result.model.state_dict(), buf)
            (tmp / "model.pt").write_bytes(buf.getvalue())
            if cfg.net:
                save_exported(result.model, tmp / "model.pt2")
            (tmp / "report_train.txt").write_text(evaluation.report_train)
            (tmp / "report_test.txt").write_text(evaluation.report_test)
            names = evaluation.metrics["classes"]["names"]
            confusion_figure(evaluation.confusion, names, f"{cfg.title}: test set").savefig(tmp / "confusion.png",
                                                                                             dpi=100)
            for split, p in evaluation.predictions.items():
                np.savez_compressed(tmp / f"{split}_predictions.npz", **p)
        write_json(tmp / "metrics.json", metrics)  # last: its presence marks a finished run
        return publish_dir(tmp, target, RECORD)


def _status(folder: Path):
    try:
        return json.loads((folder / RECORD_MARKER).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


@dataclass
class Record:
    """A run record read back from disk."""

    path: Path
    config: RunConfig
    metrics: dict
    history: list[dict]
    reused: bool = False      # True when a run was skipped because this record already existed

    @property
    def ok(self) -> bool:
        return self.metrics.get("status") == "ok"

    @property
    def diverged(self) -> bool:
        return self.metrics.get("status") == "diverged"

    def load_model(self, device="cpu") -> torch.nn.Module:
        return load_model(self.config, self.path / "model.pt", device)

    def predictions(self, split: str = "test") -> dict[str, np.ndarray]:
        """Recorded ``logits``, ``pred`` and ``true`` of the ``test`` or ``val`` split."""
        with locked(self.path.parent, shared=True):   # never between the two renames of a replace
            return read_npz(self.path / f"{split}_predictions.npz", RecordError,
                            f"Train that run again (python -m cifarlab train --force, or make run-all FORCE=1), "
                            f"or delete {self.path}")


def _ends_with(path: Path, tail: bytes) -> bool:
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - len(tail)))
        return f.read() == tail


def _unreadable(path: Path, names) -> list[str]:
    """What of ``names`` (:data:`NEEDED`) is missing or cannot be read in the record folder ``path``."""
    bad = []
    for name in names:
        f = path / name
        if not f.is_file():
            bad.append(f"{name} missing")
        elif (not os.access(f, os.R_OK) or f.stat().st_size == 0
              or (f.suffix in (".pt", ".pt2", ".npz") and not zipfile.is_zipfile(f))   # all are zip files
              or (f.suffix == ".png" and not _ends_with(f, b"IEND\xaeB`\x82"))):   # a PNG's last chunk
            bad.append(f"{name} unreadable")
    return bad


def load_record(path) -> Record:
    """Read one complete record. One that is not (a file of :data:`NEEDED` missing or unreadable) is an
    :class:`IncompleteRecord` saying what; one whose files disagree (edited by hand) a :class:`RecordError`."""
    path = Path(path)
    fix = f"Restore it, or delete {path} and train that run again."
    incomplete = lambda what: IncompleteRecord(f"{path} is an incomplete run record ({what}): never reused or "
                                               f"compared; its run is trained again (or: --force, make FORCE=1)")

    def read(name):
        try:
            return json.loads((path / name).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:   # as good as missing
            raise incomplete(f"{name} unreadable: {e}") from None

    if not (path / RECORD_MARKER).is_file():
        raise incomplete(f"{RECORD_MARKER} missing")
    metrics = read(RECORD_MARKER)
    status = metrics.get("status") if isinstance(metrics, dict) else None   # it says which files are needed
    missing = _unreadable(path, NEEDED.get(status, RECORD_FILES))
    if missing:
        raise incomplete(", ".join(missing))
    history, config_dict = read("history.json"), read("config.json")
    try:
        config = RunConfig.from_dict(config_dict)
    except (ConfigError, TypeError) as e:
        raise RecordError(f"{path / 'config.json'} does not hold a valid config ({e}). {fix}") from None
    missing = _unreadable(path, OWN_NET_FILES) if config.net and status == "ok" else []
    if missing:   # your own net reloads from model.pt2 alone
        raise incomplete(", ".join(missing))
    if status not in ("ok", "diverged"):
        raise RecordError(f"{path / 'metrics.json'} has no valid status; it was edited by hand or damaged. {fix}")
    recorded = metrics.get("config_sha256")
    if recorded is not None and recorded != _config_sha(config.to_json() + "\n"):   # the content, not its layout
        raise RecordError(f"{path / 'config.json'} was changed after the run (it no longer matches the config "
                          f"recorded in metrics.json): its numbers belong to another config. {fix}")
    lost = [k for k in OK_KEYS if k not in metrics] if status == "ok" else []
    if lost:
        raise RecordError(f"{path / 'metrics.json'} is damaged or was edited by hand: {', '.join(lost)} missing. "
                          f"{fix}")
    return Record(path, config, metrics, history)


def _is_record(folder: Path) -> bool:
    """A record folder, complete or not: metrics.json, or config.json among record files only (not best/)."""
    names = set(os.listdir(folder))
    return RECORD_MARKER in names or ("config.json" in names and names <= set(RECORD_FILES + OWN_NET_FILES))


class Found(list):
    """The records found under a folder, and ``skipped``: one line for each one not read, and why."""

    skipped: list


def find_records(root) -> Found:
    """Every complete record under ``root`` (any depth; ok and diverged, dry runs too), sorted by model,
    pooling, seed. Staging folders are skipped; an incomplete or damaged record, or a link to a folder, is
    not read and listed in ``.skipped``. Each folder is read under a shared :func:`locked`: a record being
    replaced by another process is seen before or after, never missing."""
    root = user_path(root, "--runs")
    if not root.is_dir():
        raise RecordError(f"the runs folder {root} does not exist"
                          + (" (it is a file)" if root.exists() else "")
                          + ": train some runs first (python -m cifarlab train --out RUNS, or make run-all)")
    found, folders = Found(), [root]
    found.skipped = []
    while folders:
        folder = folders.pop()
        with locked(folder, shared=True):
            for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                path = Path(entry.path)
                if entry.name.startswith((STAGING_PREFIX, ASIDE_PREFIX)) or not entry.is_dir():
                    continue
                if entry.is_symlink():
                    found.skipped.append(f"{path}: a link - cifarlab does not follow links to folders (train and "
                                         f"sweeps refuse them too); copy the folder here instead")
                elif _is_record(path):
                    try:
                        found.append(load_record(path))
                    except RecordError as e:
                        found.skipped.append(str(e))
                else:
                    folders.append(path)
    found.sort(key=lambda r: (r.config.model, r.config.pooling, r.config.seed, str(r.path)))
    return found


def reusable_record(out, cfg: RunConfig, force: bool = False, say=print):
    """Whether a run is skipped because it is recorded - the one decision, for train, the notebooks,
    ``make run-all`` and sweeps: the complete record of exactly this run (same identity) under ``out``,
    marked ``reused``; None when the run must be trained: ``force``, no record, or an incomplete one (said
    with ``say``; training replaces it). A link, or a folder cifarlab did not write, is refused either way."""
    record_target(out, cfg, ok=True)   # refused before training, not after
    path = record_path(out, cfg)
    if force or not path.exists():
        return None
    try:
        with locked(path.parent, shared=True):
            rec = load_record(path)
    except IncompleteRecord as e:
        say(f"not reused: {e}")
        return None
    if rec.config.identity() != cfg.identity():
        raise RecordError(f"{path} holds a run of another config than its name says (a hand-edited or copied "
                          f"record); move it away, or train with --force to replace it")
    rec.reused = True
    return rec

