"""The training loop, as the course writes it, over a subset that lives on the device.

    for xb, yb in loader:                       # batches already on the device
        loss = F.cross_entropy(model(xb), yb)   # forward, loss
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()

The loader is not a torch DataLoader: a class subset is a few MB, so it sits on the device as uint8
for the whole run; a batch is a slice of a seeded permutation, cropped and flipped on the device
with the run's own generator - no workers, no collation, no host->device copy. The learning rate
is a torch ``LambdaLR`` stepping every batch. Per-batch loss and correct-count stay on the device
and are read once an epoch (where a NaN/inf loss is caught and reported with its epoch, step and
learning rate), so no step waits for the device. Training time is measured around the training
steps only. The device and precision questions live in :mod:`cifarlab.hardware`.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError, RunConfig
from .data import Subset
from .errors import CifarlabError
from .hardware import autocast, pick_device, synchronize
from .models import build_model


class TrainingDiverged(CifarlabError, RuntimeError):
    """The loss became NaN or infinite; ``result`` holds the history up to the last good epoch, ``record``
    the folder its diverged record was written to (when one was)."""

    exit_code = 1

    def __init__(self, message: str, result: "TrainResult", record=None):
        super().__init__(message)
        self.result = result
        self.record = record


def seed_everything(seed: int, device: torch.device) -> torch.Generator:
    """Seed torch's global RNG (weights, dropout) and return the run's data generator.

    The generator lives on the device (CUDA/CPU), so permutations and augmentation draws
    never leave it. MPS has no device generators: there they are drawn on the CPU."""
    torch.manual_seed(seed)
    gen = torch.Generator(device=device if device.type in ("cpu", "cuda") else "cpu")
    gen.manual_seed(seed)
    return gen


def _rand(fn, *args, gen: torch.Generator, device: torch.device, **kw) -> torch.Tensor:
    """Draw with ``gen`` and put the result on ``device`` (a no-op move unless on MPS)."""
    return fn(*args, generator=gen, device=gen.device, **kw).to(device)


def pad_images(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad uint8 NHWC images once per run; crops are then just index windows."""
    if pad == 0:
        return x
    xf = x.permute(0, 3, 1, 2).float()
    xf = F.pad(xf, (pad, pad, pad, pad), mode="reflect")
    return xf.to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def augment_batch(xp: torch.Tensor, idx: torch.Tensor, pad: int, flip: bool, gen: torch.Generator,
                  size: int = 32) -> torch.Tensor:
    """Random ``size``x``size`` crops of the padded images ``xp[idx]``, each flipped with p=1/2.

    All on the device, for the whole batch: offsets and flips are drawn as tensors and the
    crop is one gather, so there is no Python loop over images and no host sync."""
    b = idx.numel()
    dev = xp.device
    if pad:
        oy = _rand(torch.randint, 0, 2 * pad + 1, (b, 1), gen=gen, device=dev)
        ox = _rand(torch.randint, 0, 2 * pad + 1, (b, 1), gen=gen, device=dev)
        ar = torch.arange(size, device=dev)
        rows = (oy + ar)[:, :, None]          # (b, size, 1)
        cols = (ox + ar)[:, None, :]          # (b, 1, size)
        x = xp[idx[:, None, None], rows, cols]  # (b, size, size, C)
    else:
        x = xp.index_select(0, idx)  # the same images as xp[idx], 20x faster on a CPU (measured)
    if flip:
        mask = _rand(torch.rand, b, gen=gen, device=dev) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(2), x)
    return x


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits for all of ``x`` in eval mode."""
    was_training = model.training
    model.eval()
    outs = [model(x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    if not outs:
        return torch.empty(0, 0)
    return torch.cat(outs)


def loss_acc(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(cross-entropy, accuracy) of logits for a whole set - counted per image; NaNs for an empty set."""
    if len(y) == 0:
        return float("nan"), float("nan")
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).sum().item() / len(y)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(cross-entropy, accuracy) of ``model`` over the whole set, not averaged per batch."""
    return loss_acc(predict_logits(model, x), y)


def make_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: RunConfig, step: int, total: int) -> float:
    """Multiplier of ``cfg.lr`` at ``step`` of ``total``."""
    if cfg.schedule == "constant":
        return 1.0
    t = step / max(1, total)
    w = cfg.warmup_fraction
    if t < w:  # linear warm-up from 10% of the peak
        return 0.1 + 0.9 * t / w
    u = (t - w) / max(1e-9, 1 - w)
    if cfg.schedule == "onecycle":  # then linear decay to zero (airbench's triangle)
        return max(0.0, 1.0 - u)
    return 0.5 * (1 + math.cos(math.pi * u))  # cosine


# --- training -------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    config: RunConfig
    model: nn.Module
    device: str
    precision: str = "fp32"               # what ran (``auto`` resolved)
    precision_reason: str = ""
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0                   # 1-based epoch with the best validation accuracy
    train_seconds: float = 0.0            # training steps only, device synchronized
    eval_seconds: float = 0.0             # per-epoch validation passes
    view_seconds: float = 0.0             # live view (bars, plots)
    steps: int = 0
    diverged: str | None = None
    backbone: dict | None = None          # the pretrained backbone it started from (cifarlab.pretrain)

    @property
    def epochs_run(self) -> int:
        return len(self.history)


class DeviceLoader:
    """The training split as an iterable of ``(images, labels)`` batches that never leave the device.

    Every pass draws a fresh order with the run's generator; a batch is a slice of that order, cropped
    and flipped on the device when the config augments (the images are padded once, here, for crops).
    Like the template's ``DataLoader(shuffle=True)`` it keeps the last, smaller batch - unless that would
    hold one image, which BatchNorm cannot train on: then it joins the batch before it."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, cfg: RunConfig, gen: torch.Generator):
        n = len(y)
        if n == 0:
            raise ValueError("the training split is empty")
        self.pad = cfg.crop_padding if cfg.augment == "crop+flip" else 0
        self.flip = cfg.augment in ("flip", "crop+flip")
        self.x, self.y, self.gen = pad_images(x, self.pad), y, gen
        self.edges = list(range(0, n, min(cfg.batch_size, n))) + [n]
        if len(self.edges) > 2 and self.edges[-1] - self.edges[-2] == 1:
            del self.edges[-2]
        if cfg.dry_run:
            self.edges = self.edges[:3]  # two batches: a smoke test

    def __len__(self) -> int:
        return len(self.edges) - 1

    def __iter__(self):
        order = _rand(torch.randperm, len(self.y), gen=self.gen, device=self.y.device)
        for a, b in zip(self.edges, self.edges[1:]):
            idx = order[a:b]
            yield augment_batch(self.x, idx, self.pad, self.flip, self.gen), self.y[idx]


def train_epoch(model: nn.Module, loader: DeviceLoader, opt: torch.optim.Optimizer, sched, label_smoothing: float,
                precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of training steps. Returns per-batch (loss, correct count) as device tensors, so that
    no step waits for the device to say a number (:func:`train` reads them once, at the epoch's end)."""
    model.train()
    losses, correct = [], []
    for xb, yb in loader:
        with autocast(precision, xb.device):
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
        correct.append((logits.argmax(1) == yb).sum())
    return torch.stack(losses).float(), torch.stack(correct).float()


def _epoch_stats(losses: np.ndarray, correct: np.ndarray, sizes: np.ndarray) -> dict:
    acc = correct / sizes
    return {
        "train_loss": float((losses * sizes).sum() / sizes.sum()),
        "train_loss_p25": float(np.percentile(losses, 25)),
        "train_loss_p75": float(np.percentile(losses, 75)),
        "train_acc": float(correct.sum() / sizes.sum()),
        "train_acc_p25": float(np.percentile(acc, 25)),
        "train_acc_p75": float(np.percentile(acc, 75)),
    }


def train(cfg: RunConfig, subset: Subset, view=None, init: dict | None = None) -> TrainResult:
    """Train ``build_model(cfg)`` on ``subset`` (moved to the config's device) and return the result.

    Reads like pytorch/examples' mnist: per epoch, :func:`train_epoch` then :func:`evaluate` on the
    validation split. ``cfg.precision`` is what runs (fp32 or bf16): ``auto`` is resolved where the run is
    planned (:func:`cifarlab.hardware.resolve_config`). ``view`` receives progress (see
    :mod:`cifarlab.liveview`); ``None`` is silent. ``init``: weights to start from instead of the fresh ones
    (a pretrained backbone's, :mod:`cifarlab.pretrain`; what it lacks - the classifier - stays fresh)."""
    if cfg.precision not in ("fp32", "bf16"):
        raise ConfigError(f"precision={cfg.precision!r} is decided where a run is planned: train "
                          f"cifarlab.hardware.resolve_config(cfg)[0] (experiment.run and sweep.plan_runs do)")
    device = pick_device(cfg.device)
    gen = seed_everything(cfg.seed, device)
    data = subset.to(device)
    model = build_model(cfg)
    if init is not None:
        model.load_state_dict({**model.state_dict(), **init})
    model = model.to(device)
    loader = DeviceLoader(data.x_train, data.y_train, cfg, gen)
    opt = make_optimizer(cfg, model)
    epochs, steps = (1 if cfg.dry_run else cfg.epochs), len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(cfg, step, epochs * steps))
    sizes = np.diff(loader.edges).astype(np.float64)

    result = TrainResult(cfg, model, str(device), cfg.precision)
    best_acc, best_state = -1.0, None
    if view is not None:
        view.start(cfg, epochs * steps, steps)
    for epoch in range(1, epochs + 1):
        row = {"epoch": epoch, "lr": sched.get_last_lr()[0]}
        synchronize(device)
        t0 = time.perf_counter()
        losses, correct = train_epoch(model, loader, opt, sched, cfg.label_smoothing, cfg.precision)
        stats = torch.stack([losses, correct]).cpu().numpy().astype(np.float64)  # the epoch's one host sync
        result.train_seconds += time.perf_counter() - t0
        result.steps += steps

        bad = np.flatnonzero(~np.isfinite(stats[0]))
        if bad.size:
            step = int(bad[0]) + 1
            lr = cfg.lr * lr_factor(cfg, (epoch - 1) * steps + step - 1, epochs * steps)
            result.diverged = (f"the training loss became {stats[0][bad[0]]} at epoch {epoch}, step {step} of "
                               f"{steps} (learning rate {lr:.3g}); lower the learning rate "
                               f"(lr={cfg.lr:g}) or check the data. The record keeps the {epoch - 1} good epoch(s).")
            if view is not None:
                view.close(result)
            raise TrainingDiverged(result.diverged, result)

        t1 = time.perf_counter()
        row.update(_epoch_stats(stats[0], stats[1], sizes))
        row["val_loss"], row["val_acc"] = evaluate(model, data.x_val, data.y_val)
        synchronize(device)
        result.eval_seconds += time.perf_counter() - t1
        row["train_seconds"] = result.train_seconds
        result.history.append(row)
        if len(data.y_val) and row["val_acc"] > best_acc:
            best_acc, result.best_epoch = row["val_acc"], epoch
            if cfg.select == "best":
                best_state = copy.deepcopy(model.state_dict())

        if view is not None:
            t2 = time.perf_counter()
            view.epoch_end(result)
            result.view_seconds += time.perf_counter() - t2

    if best_state is not None:
        model.load_state_dict(best_state)
    if not len(data.y_val):
        result.best_epoch = epochs
    if view is not None:
        t2 = time.perf_counter()
        view.close(result)
        result.view_seconds += time.perf_counter() - t2
    model.eval()
    return result
