"""One run, start to finish: check where it goes, reuse its record if it exists, else load the
classes, train, evaluate once on test, write the record.

This is what the training notebook, ``python -m cifarlab train`` and a sweep's workers call.
"""
from __future__ import annotations

import math

from .config import RunConfig
from .data import Subset, check_data_dir, subset_for
from .engine import TrainingDiverged, train
from .evaluation import evaluate_final
from .files import check_writable_dir
from .hardware import resolve_config
from .liveview import make_view
from .pretrain import check_pretraining_data, get_backbone, summary
from .records import Record, load_record, reusable_record, write_record


def run(cfg: RunConfig, out="runs", subset: Subset | None = None, data_dir=None, live="auto",
        force: bool = False, backbone=None) -> Record:
    """Train ``cfg`` and write its record under ``out``; returns the record as read back.

    When a complete record of the same identity is already there, it is returned as is
    (``record.reused``) and nothing is trained, unless ``force``. A diverged run (NaN/inf loss)
    still writes its record - beside, never over, a complete one - and raises
    :class:`cifarlab.engine.TrainingDiverged` saying where. A run with ``pretrain_epochs`` starts from
    ``backbone``, else from the one under ``out/backbones`` (made there first when missing; see
    :mod:`cifarlab.pretrain`)."""
    # everything that can be checked before training, each a one-line error: the device and precision for this
    # machine, the output folder (expanded), the data folder, the record's place
    cfg, why = resolve_config(cfg)
    out = check_writable_dir(out, "--out")
    check_data_dir(data_dir)
    existing = reusable_record(out, cfg, force)
    if existing is not None:
        print(f"skipped: {cfg.title} (record exists: {existing.path}); force=True / --force retrains it", flush=True)
        if existing.diverged:
            raise TrainingDiverged(f"this run diverged before: {existing.metrics.get('error')} "
                                   f"(record: {existing.path}; --force retrains it)", None)
        return existing
    if subset is None:
        subset = subset_for(cfg, data_dir)
    elif tuple(subset.classes.ids) != tuple(cfg.classes):
        raise ValueError(f"the subset holds classes {subset.classes.ids}, the config asks for {cfg.classes}")
    view = make_view(live)
    if cfg.pretrain_epochs and backbone is None:   # (the full data it needs is checked there first)
        backbone = get_backbone(cfg, out, data_dir, view)
    try:
        result = train(cfg, subset, view, init=backbone.weights_for(cfg) if backbone else None)
        result.precision_reason = why
    except TrainingDiverged as e:
        e.result.backbone = summary(backbone.info) if backbone else None
        path = write_record(out, e.result, None, subset)
        raise TrainingDiverged(f"{e} Its record: {path}", e.result, path) from None
    result.backbone = summary(backbone.info) if backbone else None
    evaluation = evaluate_final(result, subset)
    return load_record(write_record(out, result, evaluation, subset))


def run_grid(configs, out="runs", subset: Subset | None = None, data_dir=None, live="auto",
             force: bool = False) -> list[tuple[RunConfig, str, Record | None]]:
    """:func:`run` for each config, one after another, with one live view for all (a notebook shows one
    bar and one figure at a time). Returns (config, "trained" / "skipped" / "diverged", record) per run;
    a run that diverges is said in one line and the grid goes on."""
    check_pretraining_data(configs, data_dir)
    view, done = make_view(live), []
    for i, cfg in enumerate(configs, 1):
        try:
            record = run(cfg, out, subset, data_dir, view, force)
            done.append((cfg, "skipped" if record.reused else "trained", record))
        except TrainingDiverged as e:
            print(f"TrainingDiverged: {e}", flush=True)
            done.append((cfg, "diverged", None))
        getattr(view, "log", []).append(f"{i}/{len(configs)} {cfg.title}: {done[-1][1]}")
    return done


def grid_table(done) -> str:
    """What :func:`run_grid` did, one line per run: trained or skipped, test accuracy, seconds, record."""
    rows = [("run", "state", "test acc", "train s", "record")] + [
        (cfg.title, state, _num(rec.metrics.get("test_acc")) if rec else "-",
         f"{rec.metrics['train_seconds']:.1f}" if rec else "-", rec.path.name if rec else "-")
        for cfg, state, rec in done]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _num(v, digits: int = 4) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def summarize(record: Record) -> str:
    m = record.metrics
    if not record.ok:
        return f"{record.path}: {m.get('status')} - {m.get('error')}"
    tta = f", with flip TTA {_num(m['test_acc_tta'])}" if "test_acc_tta" in m else ""
    o = m["overfitting"]
    val = (f"val acc {_num(m['val_acc'])}" if m.get("n_val") else "no validation split")
    gap = (f"overfitting: acc gap {o['acc_gap']:+.4f}, val loss rose {_num(o['val_loss_rise'], 3)} after epoch "
           f"{o['val_loss_min_epoch']}" if m.get("n_val") else "overfitting: not measured (no validation split)")
    return (f"{record.config.net_name} net, {m['pooling']} pooling, seed {m['seed']}: "
            f"test acc {_num(m['test_acc'])}{tta}, macro-F1 {_num(m['test_macro_f1'])}, {val}, "
            f"train acc {_num(m['train_acc'])}; {m['epochs']} epochs in {m['train_seconds']:.1f} s on {m['device']} "
            f"({m.get('precision', 'fp32')}); {gap}\nrecord: {record.path}")
