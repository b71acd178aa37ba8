"""Speed: the engine vs the course template's own loop vs the arithmetic floor.

    python benchmarks/speed.py [--epochs 30] [--repeats 15] [--device auto] [--pooling avg]

Same data (classes 0, 55, 58: the 1,350-image training split, the 150-image validation split
evaluated after every epoch), same template model, batch size 128, same number of epochs:

  (a) template - the course's loop as written: TensorDataset + DataLoader(batch 128, shuffle),
      one-hot float targets, CrossEntropyLoss on them, per-batch ``.item()`` statistics, an
      evaluation pass through a second DataLoader every epoch; no plotting;
  (b) engine   - ``cifarlab.engine.train`` with the template preset (its precision: fp32), and
      engine-bf16, the same with bf16 autocast;
  (c) floor    - forward + backward + optimizer step over pre-sliced batches, plus one
      evaluation forward per epoch: nothing but the arithmetic the device must do.

Then the improved preset's epochs in fp32 and in bf16 (``--improved-epochs``). The first lines
name the machine: processor or GPU, its native bf16 support, torch's CPU capability, threads.

The contenders alternate over ``--repeats`` rounds and the median is reported (the minimum beside it:
on a shared machine, interference only ever adds time). A 30-epoch timing takes ~3 s and the floor's own
timings spread by a third on a 2-core machine, so 15 rounds, not fewer, before the medians settle; the device
is synchronized around every timing. The last line is

  engine speedup vs template loop: <r>x (template <s> s/epoch, engine <s> s/epoch, floor <s> s/epoch, overhead <p>%)
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from machine import device_summary
from torch.utils.data import DataLoader, TensorDataset

from cifarlab.config import make_config
from cifarlab.data import subset_for
from cifarlab.engine import evaluate, train
from cifarlab.hardware import pick_device, synchronize
from cifarlab.models import build_model


def template_loop(cfg, sub, device, epochs):
    """The course's loop: DataLoaders, one-hot targets, .item() every batch, eval loader every epoch."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    loss_fn = torch.nn.CrossEntropyLoss()
    k = len(cfg.classes)
    onehot = lambda y: F.one_hot(y, k).float()
    train_dl = DataLoader(TensorDataset(sub.x_train, onehot(sub.y_train)), batch_size=cfg.batch_size, shuffle=True)
    val_dl = DataLoader(TensorDataset(sub.x_val, onehot(sub.y_val)), batch_size=cfg.batch_size)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        losses, accs = [], []
        for xb, yb in train_dl:
            xb, yb = xb.to(device), yb.to(device)
            out = model(xb)
            loss = loss_fn(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            accs.append((out.argmax(1) == yb.argmax(1)).float().mean().item())
        model.eval()
        with torch.no_grad():
            for xb, yb in val_dl:
                xb, yb = xb.to(device), yb.to(device)
                out = model(xb)
                losses.append(loss_fn(out, yb).item())
                accs.append((out.argmax(1) == yb.argmax(1)).float().mean().item())
    synchronize(device)
    return time.perf_counter() - t0, model


def engine_run(cfg, sub, device, epochs):
    synchronize(device)
    t0 = time.perf_counter()
    r = train(cfg.replace(epochs=epochs, device=str(device)), sub)
    synchronize(device)
    return time.perf_counter() - t0, r.model


def floor_run(cfg, sub, device, epochs):
    """Only the arithmetic: pre-sliced batches, forward/backward/step, one eval forward per epoch."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    x, y = sub.x_train.to(device), sub.y_train.to(device)
    xv = sub.x_val.to(device)
    batches = [(x[i:i + cfg.batch_size], y[i:i + cfg.batch_size]) for i in range(0, len(y), cfg.batch_size)]
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for xb, yb in batches:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.inference_mode():
            model(xv)
    synchronize(device)
    return time.perf_counter() - t0, model


def improved_epochs(sub, device, epochs, precision):
    """Seconds per epoch of the improved preset's training (augmentation, one-cycle, its net) in one precision."""
    cfg = make_config("improved", pooling="max", epochs=epochs, device=str(device), precision=precision)
    r = train(cfg, sub)
    return r.train_seconds / epochs, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=15)   # 7 left the median within the floor's own spread
    ap.add_argument("--device", default="auto")
    ap.add_argument("--pooling", default="avg")
    ap.add_argument("--improved-epochs", type=int, default=3,
                    help="epochs per timing of the improved preset in fp32 and in bf16 (0: skip)")
    ap.add_argument("--full-runs", action="store_true",
                    help="also time one 500-epoch template-preset run per pooling tactic with the engine")
    ap.add_argument("--dry-run", action="store_true", help="1 epoch, 1 repeat: checks the script, not the speed")
    args = ap.parse_args()
    if args.dry_run:
        args.epochs, args.repeats, args.improved_epochs = 1, 1, min(args.improved_epochs, 1)

    device = pick_device(args.device)
    cfg = make_config("template", pooling=args.pooling, device=str(device))
    sub = subset_for(cfg, verbose=False).to(device)
    print(f"device {device}: {device_summary(device)}")
    print(f"template net ({args.pooling}), {len(sub.y_train)} train images, batch {cfg.batch_size}, "
          f"{args.epochs} epochs x {args.repeats} repeats (median); engine precision {cfg.precision} "
          f"(the template preset's), engine-bf16 the same with bf16 autocast")
    bf16 = cfg.replace(precision="bf16")
    contenders = {"template": lambda e: template_loop(cfg, sub, device, e),
                  "engine": lambda e: engine_run(cfg, sub, device, e),
                  "engine-bf16": lambda e: engine_run(bf16, sub, device, e),
                  "floor": lambda e: floor_run(cfg, sub, device, e)}
    for fn in contenders.values():  # warm-up: first-call costs (allocator, kernels) are not the loop's
        fn(1)
    times = {k: [] for k in contenders}
    models = {}
    for _ in range(args.repeats):
        for k, fn in contenders.items():
            t, models[k] = fn(args.epochs)
            times[k].append(t / args.epochs)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in contenders:
        acc = evaluate(models[k], sub.x_test, sub.y_test)[1]
        runs = ", ".join(f"{t:.4f}" for t in times[k])
        print(f"  {k:11s} {med[k]:.4f} s/epoch, min {min(times[k]):.4f}  (runs: {runs})  "
              f"test acc after {args.epochs} epochs {acc:.4f}")
    print(f"  template net, bf16 vs fp32 engine: {med['engine'] / med['engine-bf16']:.2f}x")
    if args.improved_epochs:
        improved_epochs(sub, device, 1, "fp32")  # warm-up
        imp = {"fp32": [], "bf16": []}
        for _ in range(args.repeats):
            for precision in imp:
                imp[precision].append(improved_epochs(sub, device, args.improved_epochs, precision)[0])
        m = {p: statistics.median(v) for p, v in imp.items()}
        runs = "; ".join(f"{p} " + ", ".join(f"{t:.3f}" for t in v) for p, v in imp.items())
        print(f"  improved preset (max), {args.improved_epochs} epochs x {args.repeats}: fp32 {m['fp32']:.4f} s/epoch, "
              f"bf16 {m['bf16']:.4f} s/epoch: bf16 {m['fp32'] / m['bf16']:.2f}x (runs {runs})")
    if args.full_runs:
        total = 0.0
        for pooling in ("stride", "max", "avg"):
            c = make_config("template", pooling=pooling, device=str(device))
            r = train(c, sub)
            total += r.train_seconds
            print(f"  full template-preset run, {pooling}: {r.train_seconds:.2f} s training "
                  f"(+{r.eval_seconds:.2f} s validation), val acc {r.history[-1]['val_acc']:.4f}")
        print(f"  all three pooling runs of the template recipe: {total:.2f} s of training")
    overhead = 100 * (med["engine"] - med["floor"]) / med["floor"]
    print(f"engine speedup vs template loop: {med['template'] / med['engine']:.2f}x (template {med['template']:.4f} "
          f"s/epoch, engine {med['engine']:.4f} s/epoch, floor {med['floor']:.4f} s/epoch, overhead {overhead:.1f}%)")


if __name__ == "__main__":
    main()
