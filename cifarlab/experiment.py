"""One run, start to finish: load the classes, train, evaluate once on test, write the record.

This is what the training notebook and ``python -m cifarlab train`` call.
"""
from __future__ import annotations

from pathlib import Path

from .config import RunConfig
from .data import Subset, subset_for
from .engine import TrainingDiverged, train
from .evaluation import evaluate_final
from .liveview import make_view
from .records import Record, load_record, write_record


def run(cfg: RunConfig, out="runs", subset: Subset | None = None, data_dir=None, live="auto") -> Record:
    """Train ``cfg`` and write its record under ``out``; returns the record as read back.

    A diverged run (NaN/inf loss) still writes its record (status "diverged", history so far)
    and then raises :class:`cifarlab.engine.TrainingDiverged` with the reason."""
    if subset is None:
        subset = subset_for(cfg, data_dir)
    elif tuple(subset.classes.ids) != tuple(cfg.classes):
        raise ValueError(f"the subset holds classes {subset.classes.ids}, the config asks for {cfg.classes}")
    try:
        result = train(cfg, subset, make_view(live))
    except TrainingDiverged as e:
        write_record(Path(out), e.result, None, subset)
        raise
    evaluation = evaluate_final(result, subset)
    return load_record(write_record(Path(out), result, evaluation, subset))


def summarize(record: Record) -> str:
    m = record.metrics
    if not record.ok:
        return f"{record.path}: {m.get('status')} - {m.get('error')}"
    tta = f", with flip TTA {m['test_acc_tta']:.4f}" if "test_acc_tta" in m else ""
    o = m["overfitting"]
    return (f"{m['model']} net, {m['pooling']} pooling, seed {m['seed']}: "
            f"test acc {m['test_acc']:.4f}{tta}, macro-F1 {m['test_macro_f1']:.4f}, val acc {m['val_acc']:.4f}, "
            f"train acc {m['train_acc']:.4f}; {m['epochs']} epochs in {m['train_seconds']:.1f} s on {m['device']}; "
            f"overfitting: acc gap {o['acc_gap']:+.4f}, val loss rose {o['val_loss_rise']:.3f} after epoch "
            f"{o['val_loss_min_epoch']}\nrecord: {record.path}")
