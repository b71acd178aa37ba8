"""The training engine: a lean loop over a subset that lives on the device.

Why it looks like this:

* A class subset is a few MB, so it sits on the device as uint8 for the whole run. A batch is
  an index slice of a seeded permutation: no DataLoader, no collation, no host->device copy.
* Augmentation (random crop with padding, horizontal flip) is done on the device, for the
  whole batch at once, with the run's own generator.
* Per-batch loss and correct-count are written into device tensors and read back once per
  epoch: the loop never waits for the device inside an epoch. A NaN/inf loss is found at the
  epoch's end from those same numbers, and reported with its epoch, step and learning rate.
* Training time is measured around the training steps only, with the device synchronized;
  evaluation and plotting are timed separately, so a plot never inflates "training seconds".
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError, RunConfig
from .data import Subset
from .errors import CifarlabError
from .models import build_model


class TrainingDiverged(CifarlabError, RuntimeError):
    """The loss became NaN or infinite; ``result`` holds the history up to the last good epoch, ``record``
    the folder its diverged record was written to (when one was)."""

    exit_code = 1

    def __init__(self, message: str, result: "TrainResult", record=None):
        super().__init__(message)
        self.result = result
        self.record = record


def pick_device(name: str = "auto") -> torch.device:
    """CUDA if present, then Apple MPS, then CPU - unless a device is named."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} was asked for, but CUDA is not available here; use device auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name!r} was asked for, but this machine has {torch.cuda.device_count()} CUDA "
                          f"device(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device={name!r} was asked for, but Apple MPS is not available here; use device auto or cpu")
    return dev


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


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
        x = xp[idx]
    if flip:
        mask = _rand(torch.rand, b, gen=gen, device=dev) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(2), x)
    return x


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1024, tta_flip: bool = False) -> torch.Tensor:
    """Logits for all of ``x`` in eval mode; with ``tta_flip`` averaged with the mirrored images."""
    was_training = model.training
    model.eval()
    outs = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        out = model(xb).float()
        if tta_flip:
            out = (out + model(xb.flip(2)).float()) / 2
        outs.append(out)
    model.train(was_training)
    if not outs:
        return torch.empty(0, 0)
    return torch.cat(outs)


def loss_acc(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(cross-entropy, accuracy) of logits for a whole set - counted per image; NaNs for an empty set."""
    if len(y) == 0:
        return float("nan"), float("nan")
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).sum().item() / len(y)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tta_flip: bool = False) -> tuple[float, float]:
    """(cross-entropy, accuracy) of ``model`` over the whole set, not averaged per batch."""
    return loss_acc(predict_logits(model, x, tta_flip=tta_flip), y)


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


# --- precision ------------------------------------------------------------------------------------
def cpu_bf16_flags() -> list[str]:
    """The CPU's native-bf16 instruction sets (AVX-512 BF16, AMX), read from /proc/cpuinfo; [] elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    except OSError:
        pass
    return []


def cpu_name() -> str:
    """This machine's processor, as figures measured on it should name it."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def device_summary(device: torch.device) -> str:
    """What a speed figure depends on: the processor or GPU, its bf16 support, threads, torch."""
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        what = f"GPU {torch.cuda.get_device_name(device)} (native bf16: {'yes' if native else 'no'})"
    else:
        flags = cpu_bf16_flags()
        what = (f"CPU {cpu_name()}, {os.cpu_count()} cores, torch CPU capability "
                f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {', '.join(flags) if flags else 'no'}")
    return f"{what}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """(``fp32`` or ``bf16``, why). ``auto`` picks bf16 only where the device computes it natively:
    a CUDA GPU with bf16 units, a CPU with AVX-512 BF16 or AMX. Elsewhere bf16 is emulated and slower
    (9x on an AVX2 CPU, measured), so ``auto`` means fp32 there; a forced ``bf16`` still runs."""
    if requested == "fp32":
        return "fp32", "fp32 as configured"
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        what = f"{torch.cuda.get_device_name(device)} {'has' if native else 'has no'} native bf16"
    elif device.type == "cpu":
        flags = cpu_bf16_flags()
        native = bool(flags)
        what = (f"this CPU has native bf16 ({', '.join(flags)})" if native else
                f"this CPU has no native bf16 (torch CPU capability {torch.backends.cpu.get_cpu_capability()})")
    else:
        native, what = False, f"no bf16 autocast on {device.type}"
    if requested == "bf16":
        return "bf16", f"bf16 as configured ({what})"
    return ("bf16" if native else "fp32"), f"auto: {what}"


def resolve_config(cfg: RunConfig) -> tuple[RunConfig, str]:
    """The config as it will run here - ``precision="auto"`` resolved for this machine's device - and why.

    A run's identity is what it computes, so a record says ``fp32`` or ``bf16``, never ``auto``: an auto
    run on a bf16 GPU and one on an fp32-only CPU are two runs, never mistaken for each other."""
    device = pick_device(cfg.device)
    precision, why = resolve_precision(cfg.precision, device)
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise ConfigError(f"precision='bf16' is not supported on {device.type}; use precision fp32 or auto")
    return (cfg if precision == cfg.precision else cfg.replace(precision=precision)), why


def autocast(precision: str, device: torch.device):
    """bf16 autocast for the forward pass (weights, gradients and optimizer state stay fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def batch_edges(n: int, batch_size: int) -> list[int]:
    """Batch boundaries in an epoch's permutation of ``n`` images. The last, smaller batch is kept,
    like the template's DataLoader - unless it would hold one image (BatchNorm cannot train on
    one): then it joins the batch before it."""
    edges = list(range(0, n, min(batch_size, n))) + [n]
    if len(edges) > 2 and edges[-1] - edges[-2] == 1:
        del edges[-2]
    return edges


@dataclass
class Batches:
    """Where an epoch's batches come from: the images (padded once for crops), labels, augmentation."""

    x: torch.Tensor               # uint8 NHWC, padded by ``pad`` when cropping
    y: torch.Tensor
    edges: list[int]
    steps: int                    # steps per epoch (2 for a dry run)
    pad: int = 0
    flip: bool = False
    gen: torch.Generator | None = None

    def __post_init__(self):
        self.spans = list(zip(self.edges[:self.steps], self.edges[1:self.steps + 1]))
        sizes = torch.tensor([b - a for a, b in self.spans], device=self.y.device)
        # which batch each position of an epoch's order falls in: per-batch counts in one index_add
        self.batch_of = torch.repeat_interleave(torch.arange(self.steps, device=self.y.device), sizes)

    def epoch(self):
        """A fresh seeded order: (the labels in that order, an iterator over the batches of images).

        Without augmentation the images are put in that order once (one gather an epoch) and every
        batch is a view; with it, each batch is cropped and flipped on the device as it is needed."""
        perm = _rand(torch.randperm, len(self.y), gen=self.gen, device=self.y.device)[:self.edges[self.steps]]
        if self.pad or self.flip:
            images = (augment_batch(self.x, perm[a:b], self.pad, self.flip, self.gen) for a, b in self.spans)
        else:
            ordered = self.x[perm]
            images = (ordered[a:b] for a, b in self.spans)
        return self.y[perm], images


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, batches: Batches, lrs, label_smoothing: float,
                precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of training steps. Returns per-batch (loss, correct count) as device tensors.

    A step is the forward, the backward and the optimizer step, nothing more: the learning rates are
    precomputed (``lrs``, one per step, or None for a constant rate), and the statistics are computed
    once at the epoch's end from the kept losses and logits - no extra kernels per step, no host sync."""
    model.train()
    device = batches.y.device
    ys, images = batches.epoch()
    losses, outputs = [], []
    for i, (xb, (a, b)) in enumerate(zip(images, batches.spans)):
        if lrs is not None:
            for g in opt.param_groups:
                g["lr"] = lrs[i]
        with autocast(precision, device):
            logits = model(xb)
            loss = F.cross_entropy(logits, ys[a:b], label_smoothing=label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        outputs.append(logits.detach())
    hits = (torch.cat(outputs).argmax(1) == ys).float()
    correct = torch.zeros(batches.steps, device=device).index_add_(0, batches.batch_of, hits)
    return torch.stack(losses).float(), correct


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


def train(cfg: RunConfig, subset: Subset, view=None) -> TrainResult:
    """Train ``build_model(cfg)`` on ``subset`` (moved to the config's device) and return the result.

    Reads like pytorch/examples' mnist: per epoch, :func:`train_epoch` then :func:`evaluate` on the
    validation split. ``view`` receives progress (see :mod:`cifarlab.liveview`); ``None`` is silent."""
    device = pick_device(cfg.device)
    precision, why = resolve_precision(cfg.precision, device)
    gen = seed_everything(cfg.seed, device)
    data = subset.to(device)
    model = build_model(cfg).to(device)
    opt = make_optimizer(cfg, model)

    n = len(data.y_train)
    if n == 0:
        raise ValueError("the training split is empty")
    edges = batch_edges(n, cfg.batch_size)
    steps = min(2, len(edges) - 1) if cfg.dry_run else len(edges) - 1
    epochs = 1 if cfg.dry_run else cfg.epochs
    crop, flip = cfg.augment == "crop+flip", cfg.augment in ("flip", "crop+flip")
    pad = cfg.crop_padding if crop else 0
    batches = Batches(pad_images(data.x_train, pad), data.y_train, edges, steps, pad, flip, gen)
    sizes = np.diff(edges)[:steps].astype(np.float64)
    total = epochs * steps
    lrs = None if cfg.schedule == "constant" else [cfg.lr * lr_factor(cfg, s, total) for s in range(total)]

    result = TrainResult(cfg, model, str(device), precision, why)
    best_acc, best_state = -1.0, None
    if view is not None:
        view.start(cfg, total, steps)
    for epoch in range(1, epochs + 1):
        synchronize(device)
        t0 = time.perf_counter()
        epoch_lrs = None if lrs is None else lrs[(epoch - 1) * steps: epoch * steps]
        losses, correct = train_epoch(model, opt, batches, epoch_lrs, cfg.label_smoothing, precision)
        stats = torch.stack([losses, correct]).cpu().numpy().astype(np.float64)  # the epoch's one host sync
        result.train_seconds += time.perf_counter() - t0
        result.steps += steps

        bad = np.flatnonzero(~np.isfinite(stats[0]))
        if bad.size:
            step = int(bad[0]) + 1
            lr = cfg.lr * lr_factor(cfg, (epoch - 1) * steps + step - 1, total)
            result.diverged = (f"the training loss became {stats[0][bad[0]]} at epoch {epoch}, step {step} of "
                               f"{steps} (learning rate {lr:.3g}); lower the learning rate "
                               f"(lr={cfg.lr:g}) or check the data. The record keeps the {epoch - 1} good epoch(s).")
            if view is not None:
                view.close(result)
            raise TrainingDiverged(result.diverged, result)

        t1 = time.perf_counter()
        row = {"epoch": epoch, "lr": cfg.lr if lrs is None else lrs[(epoch - 1) * steps],
               **_epoch_stats(stats[0], stats[1], sizes)}
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
