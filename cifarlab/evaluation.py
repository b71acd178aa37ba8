"""Judging a trained model: final metrics, per-class reports, confusion matrix, overfitting.

The test set is used here once per final model; everything that chooses (epochs, configs)
uses the validation split.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import classification_report, confusion_matrix, f1_score

from .data import Subset
from .engine import TrainResult, loss_acc, predict_logits


@dataclass
class Evaluation:
    metrics: dict                 # the numbers that go to metrics.json
    report_train: str             # sklearn classification_report, digits=4
    report_test: str
    confusion: np.ndarray         # test set, rows = true label
    test_logits: np.ndarray
    test_pred: np.ndarray
    test_true: np.ndarray


def overfitting(history: list[dict], train_loss: float, train_acc: float, val_loss: float, val_acc: float) -> dict:
    """How much the run overfit, measured on data the model does not train on.

    * ``acc_gap`` - train minus validation accuracy at the end (both in eval mode, no augmentation);
    * ``loss_gap`` - validation minus train cross-entropy at the end;
    * ``val_loss_rise`` - how far the validation loss rose after its minimum (0 if it never did),
      with the epoch of that minimum."""
    val_losses = np.array([h["val_loss"] for h in history], dtype=float)
    finite = np.isfinite(val_losses)
    if finite.any():
        i = int(np.nanargmin(np.where(finite, val_losses, np.inf)))
        rise, min_epoch, min_loss = float(val_losses[-1] - val_losses[i]), int(history[i]["epoch"]), float(val_losses[i])
    else:
        rise, min_epoch, min_loss = float("nan"), 0, float("nan")
    return {"acc_gap": train_acc - val_acc, "loss_gap": val_loss - train_loss,
            "val_loss_rise": rise, "val_loss_min": min_loss, "val_loss_min_epoch": min_epoch}


def evaluate_final(result: TrainResult, subset: Subset) -> Evaluation:
    """Final numbers of a trained model: train/val (eval mode, no augmentation) and the test set, once."""
    model, cfg = result.model, result.config
    dev = next(model.parameters()).device
    data = subset.to(dev)
    names = list(subset.classes.names)
    labels = list(range(len(names)))

    tr_logits = predict_logits(model, data.x_train)
    va_logits = predict_logits(model, data.x_val)
    te_logits = predict_logits(model, data.x_test)
    train_loss, train_acc = loss_acc(tr_logits, data.y_train)
    val_loss, val_acc = loss_acc(va_logits, data.y_val)
    test_loss, test_acc = loss_acc(te_logits, data.y_test)

    y_tr, y_te = data.y_train.cpu().numpy(), data.y_test.cpu().numpy()
    p_tr, p_te = tr_logits.argmax(1).cpu().numpy(), te_logits.argmax(1).cpu().numpy()
    metrics = {
        "classes": subset.classes.to_dict(),
        "model": cfg.model, "pooling": cfg.pooling, "seed": cfg.seed,
        "epochs": result.epochs_run, "steps": result.steps, "device": result.device,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": result.train_seconds, "eval_seconds": result.eval_seconds,
        "view_seconds": result.view_seconds,
        "train_acc": train_acc, "train_loss": train_loss,
        "val_acc": val_acc, "val_loss": val_loss,
        "test_acc": test_acc, "test_loss": test_loss,
        "test_macro_f1": float(f1_score(y_te, p_te, average="macro", labels=labels, zero_division=0)),
        "best_epoch": result.best_epoch,
        "best_val_acc": max((h["val_acc"] for h in result.history), default=float("nan")),
        "selected_epoch": result.best_epoch if cfg.select == "best" else result.epochs_run,
        "n_train": len(y_tr), "n_val": len(data.y_val), "n_test": len(y_te),
        "data_source": subset.source,
        "overfitting": overfitting(result.history, train_loss, train_acc, val_loss, val_acc),
    }
    if cfg.tta_flip:
        # Reported beside, never instead of, the plain numbers.
        metrics["val_acc_tta"] = loss_acc(predict_logits(model, data.x_val, tta_flip=True), data.y_val)[1]
        metrics["test_acc_tta"] = loss_acc(predict_logits(model, data.x_test, tta_flip=True), data.y_test)[1]
    report = lambda y, p: classification_report(y, p, labels=labels, target_names=names, digits=4, zero_division=0)
    return Evaluation(metrics, report(y_tr, p_tr), report(y_te, p_te),
                      confusion_matrix(y_te, p_te, labels=labels), te_logits.cpu().numpy(), p_te, y_te)


def confusion_figure(cm: np.ndarray, names, title: str = "test set confusion matrix") -> Figure:
    k = len(names)
    size = max(4.0, 0.5 * k + 2)
    fig = Figure(figsize=(size, size * 0.85), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    thresh = cm.max() / 2 if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > thresh else "black",
                    fontsize=8 if k > 10 else 10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title)
    return fig
