"""Run records: one folder per run, everything needed to compare and reproduce runs later.

    <out>/<run_name>/                 e.g. improved_max_seed0_c0-55-58_3f2a9c1d (see RunConfig.run_name)
        config.json          the RunConfig, every field
        metrics.json         final numbers (see cifarlab.evaluation), status, and the run's identity:
                             run_id, config_id, experiment_id, experiment (in words)
        history.json         per-epoch train (mean, 25/75%) and validation loss/accuracy
        model.pt             state_dict only (loads with weights_only=True)
        model.pt2, net.py    your own net only: the trained net as a torch.export program (reloads without
                             your class) and the class's source, for a person to read
        curves.png           the two-panel training figure
        report_train.txt     classification_report (digits=4) on the training images
        report_test.txt      the same on the test set
        confusion.png        test-set confusion matrix
        test_predictions.npz test logits (computed on the CPU in fp32), predicted and true labels
        val_predictions.npz  the same for the validation split: what the choice rule pairs on

A folder's name carries a hash of the run's identity, so runs that differ in anything that can
change their numbers never share a folder. A record is built in a hidden staging folder and
moved into place in one rename (``metrics.json`` is written last): a crash never leaves a half
record, and a reader never sees one. A record is replaced only by a complete run of the same
identity (``--force``); a diverged run never replaces a complete one - it is written beside it.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError, RunConfig
from .figures import confusion_figure, plot_curves
from .files import (
    OutputError,
    Owned,
    check_replaceable,
    is_hidden_work,
    publish_dir,
    read_json,
    staging_dir,
    write_json,
)
from .models import load_model
from .ownnet import save_exported, source_text

RECORD_FILES = ("config.json", "metrics.json", "history.json", "model.pt", "curves.png",
                "report_train.txt", "report_test.txt", "confusion.png", "test_predictions.npz",
                "val_predictions.npz")
OWN_NET_FILES = ("model.pt2", "net.py")   # a record of your own net has these too
RECORD_MARKER = "metrics.json"      # written last: its presence marks a complete record
DIVERGED_SUFFIX = "_diverged"
RECORD = Owned(RECORD_MARKER, frozenset(RECORD_FILES + OWN_NET_FILES), "--out", "run record")


class RecordError(OutputError):
    """A record folder that cannot be read as it is; the message names the file and what to do."""


def _config_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def identity_fields(cfg: RunConfig) -> dict:
    """What metrics.json carries to say which run, configuration and experiment it belongs to."""
    return {"run_id": cfg.run_id, "config_id": cfg.config_id, "experiment_id": cfg.experiment_id,
            "configuration": cfg.configuration_label, "experiment": cfg.experiment_label,
            "experiment_name": cfg.experiment_name}


def record_path(out, cfg: RunConfig) -> Path:
    return Path(out) / cfg.run_name


def check_record_target(out, cfg: RunConfig) -> None:
    """Before training: refuse early when ``out/<run_name>`` is something this project did not write."""
    check_replaceable(record_path(out, cfg), RECORD)


def record_target(out, cfg: RunConfig, ok: bool) -> Path:
    """Where a record of ``cfg`` goes: ``out/<run_name>``, except that a diverged run (``ok`` False) goes to
    ``<run_name>_diverged`` when a complete record of the same identity is already there, so the good
    one is never replaced by a failed one. Refused when the place holds something this project did not write."""
    target = record_path(out, cfg)
    if not ok and (target / RECORD_MARKER).is_file() and _status(target) == "ok":
        target = target.with_name(target.name + DIVERGED_SUFFIX)
    check_replaceable(target, RECORD)
    return target


def write_record(out, result, evaluation=None, subset=None) -> Path:
    """Write the record of a finished (or diverged) run under ``out``, atomically; return its folder.

    A diverged run (``evaluation`` None) goes beside a complete record of the same identity
    (:func:`record_target`)."""
    cfg: RunConfig = result.config
    out = Path(out)
    target = record_target(out, cfg, ok=evaluation is not None)
    tmp = staging_dir(out, target.name)
    try:
        config_text = cfg.to_json() + "\n"
        (tmp / "config.json").write_text(config_text)
        write_json(tmp / "history.json", result.history)
        if cfg.net:
            (tmp / "net.py").write_text(source_text(cfg.net))
        plot_curves(result.history, cfg.title, result.best_epoch).savefig(tmp / "curves.png", dpi=100)
        ident = {**identity_fields(cfg), "config_sha256": _config_sha(config_text)}
        if evaluation is None:  # a diverged run: keep what there is, say what happened
            metrics = {"status": "diverged", "error": result.diverged, "model": cfg.model, "pooling": cfg.pooling,
                       "seed": cfg.seed, "epochs": result.epochs_run, "device": result.device,
                       "train_seconds": result.train_seconds, **ident,
                       "classes": subset.classes.to_dict() if subset is not None else list(cfg.classes)}
        else:
            metrics = {"status": "ok", **evaluation.metrics, **ident}
            torch.save(result.model.state_dict(), tmp / "model.pt")
            if cfg.net:
                save_exported(result.model, tmp / "model.pt2")
            (tmp / "report_train.txt").write_text(evaluation.report_train)
            (tmp / "report_test.txt").write_text(evaluation.report_test)
            names = evaluation.metrics["classes"]["names"]
            confusion_figure(evaluation.confusion, names, f"{cfg.title}: test set").savefig(tmp / "confusion.png",
                                                                                             dpi=100)
            for split, p in evaluation.predictions.items():
                np.savez_compressed(tmp / f"{split}_predictions.npz", **p)
        write_json(tmp / "metrics.json", metrics)  # last: its presence marks a complete record
        return publish_dir(tmp, target, RECORD)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
        path = self.path / f"{split}_predictions.npz"
        if not path.is_file():
            raise RecordError(f"{path} is missing: this record was written by an older cifarlab or damaged. "
                              f"Train that run again (python -m cifarlab train, or make run-all, writes a new "
                              f"record beside it), or delete {self.path}")
        with np.load(path) as z:
            return {k: z[k] for k in z.files}


def load_record(path) -> Record:
    """Read one record; a missing, damaged or hand-edited file is a :class:`RecordError` naming it."""
    path = Path(path)
    if not (path / RECORD_MARKER).is_file():
        raise RecordError(f"{path} is not a complete run record ({RECORD_MARKER} is missing); "
                          f"the run that wrote it did not finish. Train it again.")
    fix = f"Restore it, or delete {path} and train that run again."
    try:
        config_text = (path / "config.json").read_text()
        config = RunConfig.from_dict(json.loads(config_text))
    except FileNotFoundError:
        raise RecordError(f"{path / 'config.json'} is missing. {fix}") from None
    except json.JSONDecodeError as e:
        raise RecordError(f"{path / 'config.json'} is not valid JSON ({e}). {fix}") from None
    except (ConfigError, TypeError) as e:
        raise RecordError(f"{path / 'config.json'} does not hold a valid config ({e}). {fix}") from None
    metrics = read_json(path / "metrics.json", "run record", RecordError)
    if not isinstance(metrics, dict) or metrics.get("status") not in ("ok", "diverged"):
        raise RecordError(f"{path / 'metrics.json'} has no valid status; it was edited by hand or damaged. {fix}")
    recorded = metrics.get("config_sha256")
    if recorded is not None and recorded != _config_sha(config_text):
        raise RecordError(f"{path / 'config.json'} was changed after the run (it no longer matches the config "
                          f"recorded in metrics.json): its numbers belong to another config. {fix}")
    try:
        history = json.loads((path / "history.json").read_text())
    except (OSError, ValueError) as e:
        raise RecordError(f"{path / 'history.json'} cannot be read ({e}). {fix}") from None
    return Record(path, config, metrics, history)


def find_records(root) -> list[Record]:
    """Every record under ``root`` (any depth; ok and diverged, dry runs too), sorted by model, pooling,
    seed. Staging folders are skipped; a damaged record is an error that names it."""
    root = Path(root)
    if not root.is_dir():
        raise RecordError(f"the runs folder {root} does not exist"
                          + (" (it is a file)" if root.exists() else "")
                          + ": train some runs first (python -m cifarlab train --out RUNS, or make run-all)")
    records = [load_record(p.parent) for p in sorted(root.rglob(RECORD_MARKER))
               if not is_hidden_work(p.relative_to(root))]
    return sorted(records, key=lambda r: (r.config.model, r.config.pooling, r.config.seed, str(r.path)))


def find_record(out, cfg: RunConfig):
    """The complete record of exactly this run (same identity) under ``out``, or None."""
    path = record_path(out, cfg)
    if not (path / RECORD_MARKER).is_file():
        return None
    rec = load_record(path)
    if rec.config.identity() != cfg.identity():
        raise RecordError(f"{path} holds a run of another config than its name says (a hand-edited or copied "
                          f"record); move it away, or train with --force to replace it")
    return rec


__all__ = ["Record", "RecordError", "find_records", "find_record", "load_record", "write_record", "RECORD_FILES"]
