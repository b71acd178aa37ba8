"""Run records: one folder per run, everything needed to compare runs later.

    <out>/<run_name>/
        config.json          the RunConfig, every field
        metrics.json         final numbers (see cifarlab.evaluation.evaluate_final), status
        history.json         per-epoch train (mean, 25/75%) and validation loss/accuracy
        model.pt             state_dict only (loads with weights_only=True)
        curves.png           the two-panel training figure
        report_train.txt     classification_report (digits=4) on the training images
        report_test.txt      the same on the test set
        confusion.png        test-set confusion matrix
        test_predictions.npz test logits, predicted and true labels

A record is written into a hidden temporary folder and moved into place in one rename, so
a crash mid-write never leaves a half-written record where a good one was. Summary notebooks
read records, never another notebook's variables.
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
import torch

from .config import RunConfig

RECORD_FILES = ("config.json", "metrics.json", "history.json", "model.pt", "curves.png",
                "report_train.txt", "report_test.txt", "confusion.png", "test_predictions.npz")


def _clean(obj):
    """JSON without NaN/inf (written as null), numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_json(path: Path, obj) -> None:
    Path(path).write_text(json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n")


def publish_dir(tmp: Path, target: Path) -> Path:
    """Move a finished folder into place: any previous folder of that name is replaced only
    after the new one is complete (rename aside, rename in, delete the old)."""
    target = Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def staging_dir(out: Path, name: str) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=out))


def write_record(out: Path, result, evaluation=None, subset=None) -> Path:
    """Write the record of a finished (or diverged) run to ``out/<run_name>`` atomically."""
    from .evaluation import confusion_figure
    from .liveview import plot_curves

    cfg: RunConfig = result.config
    tmp = staging_dir(out, cfg.run_name)
    try:
        (tmp / "config.json").write_text(cfg.to_json() + "\n")
        write_json(tmp / "history.json", result.history)
        title = cfg.title
        plot_curves(result.history, title, result.best_epoch).savefig(tmp / "curves.png", dpi=100)
        if evaluation is None:  # a diverged run: keep what there is, say what happened
            metrics = {"status": "diverged", "error": result.diverged, "model": cfg.model, "pooling": cfg.pooling,
                       "seed": cfg.seed, "epochs": result.epochs_run, "device": result.device,
                       "train_seconds": result.train_seconds,
                       "classes": subset.classes.to_dict() if subset is not None else list(cfg.classes)}
        else:
            metrics = {"status": "ok", **evaluation.metrics}
            torch.save(result.model.state_dict(), tmp / "model.pt")
            (tmp / "report_train.txt").write_text(evaluation.report_train)
            (tmp / "report_test.txt").write_text(evaluation.report_test)
            names = evaluation.metrics["classes"]["names"]
            confusion_figure(evaluation.confusion, names, f"{title}: test set").savefig(tmp / "confusion.png", dpi=100)
            np.savez_compressed(tmp / "test_predictions.npz", logits=evaluation.test_logits,
                                pred=evaluation.test_pred, true=evaluation.test_true)
        write_json(tmp / "metrics.json", metrics)  # last: its presence marks a complete record
        return publish_dir(tmp, Path(out) / cfg.run_name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass
class Record:
    """A run record read back from disk."""

    path: Path
    config: RunConfig
    metrics: dict
    history: list[dict]

    @property
    def ok(self) -> bool:
        return self.metrics.get("status") == "ok"

    def load_model(self, device="cpu") -> torch.nn.Module:
        from .export import load_model
        return load_model(self.config, self.path / "model.pt", device)

    def predictions(self) -> dict[str, np.ndarray]:
        with np.load(self.path / "test_predictions.npz") as z:
            return {k: z[k] for k in z.files}


def load_record(path) -> Record:
    path = Path(path)
    try:
        config = RunConfig.from_dict(json.loads((path / "config.json").read_text()))
        metrics = json.loads((path / "metrics.json").read_text())
        history = json.loads((path / "history.json").read_text())
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path} is not a complete run record ({e.filename} is missing)") from None
    return Record(path, config, metrics, history)


def find_records(root, ok_only: bool = True) -> list[Record]:
    """Every record under ``root`` (any depth), sorted by model, pooling, seed."""
    root = Path(root)
    records = [load_record(p.parent) for p in sorted(root.rglob("metrics.json"))
               if not any(part.startswith((".tmp-", ".old-")) for part in p.parts)]
    if ok_only:
        records = [r for r in records if r.ok]
    return sorted(records, key=lambda r: (r.config.model, r.config.pooling, r.config.seed, str(r.path)))
