"""Judging a trained model, on the test set once: final metrics, per-class reports, confusion matrix,
overfitting, and what else a pooling tactic changes - robustness to small shifts, and cost (parameters,
FLOPs, latency). The metrics are listed in docs/records.md and docs/statistics.md.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix, f1_score
from torch import nn

from .data import Subset
from .engine import TrainResult, loss_acc, predict_logits
from .models import count_parameters

DRY_RUN_IMAGES = 256   # per split, for dry runs only


@dataclass
class Evaluation:
    metrics: dict                 # the numbers that go to metrics.json
    report_train: str             # sklearn classification_report, digits=4
    report_test: str
    confusion: np.ndarray         # test set, rows = true label
    predictions: dict             # "test"/"val" -> {"logits", "pred", "true"} (numpy, from the CPU)


def overfitting(history: list[dict], train_loss: float, train_acc: float, val_loss: float, val_acc: float) -> dict:
    """How much the run overfit (docs/records.md): train - validation accuracy and validation - train loss at
    the end (both in eval mode, no augmentation), and how far the validation loss rose after its minimum."""
    val_losses = np.array([h["val_loss"] for h in history], dtype=float)
    finite = np.isfinite(val_losses)
    if finite.any():
        i = int(np.nanargmin(np.where(finite, val_losses, np.inf)))
        rise, min_epoch, min_loss = (float(val_losses[-1] - val_losses[i]), int(history[i]["epoch"]),
                                     float(val_losses[i]))
    else:
        rise, min_epoch, min_loss = float("nan"), 0, float("nan")
    return {"acc_gap": train_acc - val_acc, "loss_gap": val_loss - train_loss,
            "val_loss_rise": rise, "val_loss_min": min_loss, "val_loss_min_epoch": min_epoch}


# --- what else the pooling tactics change: shift robustness and cost ------------------------------
SHIFTS = tuple(range(-4, 5))    # pixels, each axis


def shift_images(x: torch.Tensor, dx, dy) -> torch.Tensor:
    """Images (uint8 NHWC) moved ``dx`` pixels right and ``dy`` down. Pixels that come in from outside
    repeat the nearest border pixel (edge padding) - exactly the web page's ``shifted()`` (web/app.js).
    ``dx``/``dy``: one shift for all images, or a tensor of one shift per image."""
    n, h, w, _ = x.shape
    dx, dy = (torch.as_tensor(d, device=x.device).reshape(-1, 1) for d in (dx, dy))
    rows = (torch.arange(h, device=x.device) - dy).clamp(0, h - 1)   # (1 or n, h)
    cols = (torch.arange(w, device=x.device) - dx).clamp(0, w - 1)
    idx = torch.arange(n, device=x.device)[:, None, None]
    return x[idx, rows.expand(n, h)[:, :, None], cols.expand(n, w)[:, None, :]]


def random_shift_pairs(n: int) -> torch.Tensor:
    """Two random shifts (dx, dy) per image, each coordinate uniform in -4..4 (:data:`SHIFTS`): (2, 2, n) ints."""
    return torch.randint(min(SHIFTS), max(SHIFTS) + 1, (2, 2, n), generator=torch.Generator().manual_seed(0))


def shift_consistency(predict, x: torch.Tensor, pairs: torch.Tensor) -> float:
    """Share of images whose predicted class is the same under two shifts (Zhang, ICML 2019; docs/statistics.md).
    ``predict``: images -> classes; ``pairs``: (2, 2, n) from :func:`random_shift_pairs`."""
    if len(x) == 0:
        return float("nan")
    a, b = (np.asarray(predict(shift_images(x, p[0], p[1]))) for p in pairs)
    return float((a == b).mean())


def shift_robustness(predict, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Accuracy of the images shifted by each of :data:`SHIFTS` horizontally and vertically (edge padding),
    and the shift consistency under two random shifts per image. ``predict``: images -> classes."""
    y = np.asarray(y)
    preds = {}

    def acc(dx, dy):
        if (dx, dy) not in preds:  # the unshifted images serve both axes
            preds[(dx, dy)] = float((np.asarray(predict(shift_images(x, dx, dy))) == y).mean()) if len(y) else None
        return preds[(dx, dy)]
    return {"shift_acc": {"shifts": list(SHIFTS), "padding": "edge (border pixels repeated)",
                          "horizontal": [acc(s, 0) for s in SHIFTS], "vertical": [acc(0, s) for s in SHIFTS]},
            "shift_consistency": shift_consistency(predict, x, random_shift_pairs(len(x)))}


def forward_flops(model: nn.Module) -> int:
    """Forward FLOPs for one 32x32 image, as torch's FlopCounterMode counts them: convolutions and
    matrix products, 2 per multiply-add (pooling, BatchNorm and activations are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    x = torch.zeros(1, 32, 32, 3, dtype=torch.uint8, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


def measures(model: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor) -> dict:
    """What else a pooling tactic changes, on the test set by the final model: shift robustness, parameters,
    forward FLOPs per image, and latency - in onnxruntime, as deployed and 2-3x faster than PyTorch here."""
    from .export import onnx_latency, onnx_predict, onnx_session
    t0 = time.perf_counter()
    sess = onnx_session(model)
    out = shift_robustness(lambda x: onnx_predict(sess, x.cpu().numpy()).argmax(1), x_test, y_test)
    out.update({"params": count_parameters(model), "flops": forward_flops(model), **onnx_latency(sess)})
    out["measure_seconds"] = time.perf_counter() - t0
    return out


def evaluate_final(result: TrainResult, subset: Subset) -> Evaluation:
    """Final numbers of a trained model: train/val (eval mode, no augmentation) and the test set, once.
    On the CPU in fp32 whatever device trained, so a reload on any machine recomputes the recorded logits
    (docs/statistics.md, "Reload anywhere"): a GPU's TF32 or a bf16 autocast never leaks into the record."""
    model, cfg = result.model, result.config
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    model.eval()
    data = subset.to("cpu")
    if cfg.dry_run:  # a smoke test: judge on a few images of each split, not all 60,000 of a big subset
        data = dataclasses.replace(data, **{k: getattr(data, k)[:DRY_RUN_IMAGES] for k in
                                            ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")})
    names = list(subset.classes.names)
    labels = list(range(len(names)))

    logits = {split: predict_logits(model, getattr(data, f"x_{split}")) for split in ("train", "val", "test")}
    (train_loss, train_acc), (val_loss, val_acc), (test_loss, test_acc) = (
        loss_acc(logits[s], getattr(data, f"y_{s}")) for s in ("train", "val", "test"))
    y = {s: getattr(data, f"y_{s}").numpy() for s in ("train", "val", "test")}
    pred = {s: logits[s].argmax(1).numpy() if len(y[s]) else np.zeros(0, np.int64) for s in logits}
    history_val = [h["val_acc"] for h in result.history if h.get("val_acc") is not None and np.isfinite(h["val_acc"])]
    metrics = {
        "classes": subset.classes.to_dict(),
        "model": cfg.model, "pooling": cfg.pooling, "seed": cfg.seed,
        "epochs": result.epochs_run, "steps": result.steps, "device": result.device,
        "precision": result.precision, "precision_reason": result.precision_reason,
        "train_seconds": result.train_seconds, "eval_seconds": result.eval_seconds,
        "view_seconds": result.view_seconds,
        "train_acc": train_acc, "train_loss": train_loss,
        "val_acc": val_acc, "val_loss": val_loss,
        "test_acc": test_acc, "test_loss": test_loss,
        "test_macro_f1": float(f1_score(y["test"], pred["test"], average="macro", labels=labels, zero_division=0)),
        "best_epoch": result.best_epoch,
        "best_val_acc": max(history_val, default=float("nan")),
        "selected_epoch": result.best_epoch if cfg.select == "best" else result.epochs_run,
        "n_train": len(y["train"]), "n_val": len(y["val"]), "n_test": len(y["test"]),
        "data_source": subset.source,
        "overfitting": overfitting(result.history, train_loss, train_acc, val_loss, val_acc),
    }
    if cfg.tta_flip:
        # Reported beside, never instead of, the plain numbers; only the mirrored images need a forward pass.
        for s in ("val", "test"):
            mirrored = predict_logits(model, getattr(data, f"x_{s}").flip(2))
            metrics[f"{s}_acc_tta"] = loss_acc((logits[s] + mirrored) / 2, getattr(data, f"y_{s}"))[1]
    # What else the pooling tactics change (on the test set, by the final model), and what measuring cost.
    metrics.update(measures(model, data.x_test, data.y_test))
    report = lambda y, p: classification_report(y, p, labels=labels, target_names=names, digits=4, zero_division=0)
    predictions = {s: {"logits": logits[s].numpy(), "pred": pred[s], "true": y[s]} for s in ("test", "val")}
    return Evaluation(metrics, report(y["train"], pred["train"]), report(y["test"], pred["test"]),
                      confusion_matrix(y["test"], pred["test"], labels=labels), predictions)
