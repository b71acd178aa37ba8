import numpy as np
import pytest
import torch

from cifarlab.config import ConfigError, make_config
from cifarlab.engine import TrainingDiverged, augment_batch, lr_factor, pad_images, predict_logits, train
from cifarlab.evaluation import evaluate_final
from cifarlab.experiment import run
from cifarlab.hardware import pick_device


def test_device_pick(sample_subset):
    want = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert pick_device("auto").type == want
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            pick_device("cuda")
    # the model trains where it was asked to, and the record says so
    r = train(make_config("template", epochs=1, device="cpu", dry_run=True), sample_subset)
    assert r.device == "cpu" and next(r.model.parameters()).device.type == "cpu"


def test_same_seed_same_numbers_on_cpu(sample_subset):
    # 320 of the training images (3 steps an epoch, the last one short) show it as well as all 1350, 4x faster
    from dataclasses import replace
    sample_subset = replace(sample_subset, x_train=sample_subset.x_train[:320], y_train=sample_subset.y_train[:320])
    cfg = make_config("improved", hidden_size=8, epochs=2, device="cpu", seed=7, precision="fp32")
    a, b = train(cfg, sample_subset), train(cfg, sample_subset)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert [h["val_acc"] for h in a.history] == [h["val_acc"] for h in b.history]
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    c = train(cfg.replace(seed=8), sample_subset)
    assert [h["train_loss"] for h in c.history] != [h["train_loss"] for h in a.history]


def test_short_training_beats_chance(sample_subset):
    r = train(make_config("template", pooling="max", epochs=25, device="cpu"), sample_subset)
    assert r.history[-1]["val_acc"] > 0.7  # chance is 1/3
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert r.steps == 25 * 11 and r.train_seconds > 0 and r.eval_seconds > 0
    h = r.history[-1]
    assert h["train_loss_p25"] <= h["train_loss_p75"] and h["train_acc_p25"] <= h["train_acc_p75"]
    assert 1 <= r.best_epoch <= 25


def test_augmentation_is_a_crop_and_flip_of_the_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8)
    xp = pad_images(x, 4)
    assert xp.shape == (16, 40, 40, 3) and torch.equal(xp[:, 4:36, 4:36], x)
    out = augment_batch(xp, torch.arange(16), 4, True, g)
    assert out.shape == (16, 32, 32, 3) and out.dtype == torch.uint8
    for i in range(16):  # each output is some 32x32 window of the padded image, maybe mirrored
        found = any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(1))
                    for dy in range(9) for dx in range(9) for w in [xp[i, dy:dy + 32, dx:dx + 32]])
        assert found
    same = augment_batch(x, torch.arange(16), 0, False, g)
    assert torch.equal(same, x)


def test_schedules_are_told_apart():
    onecycle = make_config("improved", warmup_fraction=0.2)
    cosine = onecycle.replace(schedule="cosine")
    for cfg in (onecycle, cosine):
        f = [lr_factor(cfg, s, 100) for s in range(101)]
        assert f[0] == pytest.approx(0.1) and f[20] == pytest.approx(1.0) and max(f) == pytest.approx(1.0)
        assert f[10] == pytest.approx(0.55)  # linear warm-up from 10% of the peak
        assert f[100] == pytest.approx(0.0)
    # halfway down the decay: one-cycle is linear (0.5), cosine is 0.5 too at the middle, so look at a quarter
    assert lr_factor(onecycle, 40, 100) == pytest.approx(0.75)
    assert lr_factor(cosine, 40, 100) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.25)))  # 0.854
    assert lr_factor(make_config("template"), 50, 100) == 1.0


def test_the_schedule_is_what_the_optimizer_used(sample_subset):
    cfg = make_config("improved", hidden_size=4, epochs=4, device="cpu", precision="fp32")
    r = train(cfg, sample_subset)
    steps = r.steps // 4
    assert [h["lr"] for h in r.history] == [cfg.lr * lr_factor(cfg, e * steps, r.steps) for e in range(4)]


def test_select_best_restores_the_best_epoch(sample_subset):
    from cifarlab.engine import evaluate
    cfg = make_config("template", pooling="max", epochs=12, lr=0.05, device="cpu", select="best")
    r = train(cfg, sample_subset)
    val = [h["val_acc"] for h in r.history]
    assert r.best_epoch == int(np.argmax(val)) + 1
    assert evaluate(r.model, sample_subset.x_val, sample_subset.y_val)[1] == pytest.approx(max(val))
    last = train(cfg.replace(select="last"), sample_subset)
    assert evaluate(last.model, sample_subset.x_val, sample_subset.y_val)[1] == pytest.approx(val[-1])
    assert max(val) > val[-1] or r.best_epoch == 12  # (if the last epoch is the best, both agree)


def test_training_without_a_validation_split(sample_subset):
    from cifarlab.data import load_subset
    sub = load_subset((0, 55, 58), val_fraction=0, verbose=False)
    assert len(sub.y_val) == 0 and len(sub.y_train) == 1500
    r = train(make_config("template", epochs=3, val_fraction=0, device="cpu"), sub)
    assert r.best_epoch == 3 and all(np.isnan(h["val_acc"]) for h in r.history)


def test_precision_auto_resolves_by_what_the_hardware_has(monkeypatch):
    import cifarlab.hardware as hardware
    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "cpu_bf16_flags", lambda: [])
    p, why = hardware.resolve_precision("auto", cpu)
    assert p == "fp32" and "no native bf16" in why
    monkeypatch.setattr(hardware, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    p, why = hardware.resolve_precision("auto", cpu)
    assert p == "bf16" and "avx512_bf16" in why
    assert hardware.resolve_precision("fp32", cpu)[0] == "fp32"
    assert hardware.resolve_precision("bf16", cpu)[0] == "bf16"


def test_the_real_cpu_flags_are_read():
    from cifarlab.hardware import cpu_bf16_flags
    flags = open("/proc/cpuinfo").read()
    assert ("avx512_bf16" in cpu_bf16_flags()) == (" avx512_bf16" in flags)


def test_auto_precision_is_resolved_into_the_record(sample_subset, tmp_path):
    """A record says what ran: auto becomes fp32 or bf16 (by this machine's hardware) in its config and
    identity, so an auto run from a bf16 machine is never reused as this machine's fp32 run."""
    from cifarlab.hardware import cpu_bf16_flags
    want = "bf16" if cpu_bf16_flags() else "fp32"
    cfg = make_config("template", epochs=2, precision="auto", device="cpu")
    rec = run(cfg, out=tmp_path, subset=sample_subset, live="none")
    assert rec.config.precision == rec.metrics["precision"] == want
    assert rec.metrics["precision_reason"].startswith("auto: ")
    assert rec.path.name == cfg.replace(precision=want).run_name
    assert run(cfg, out=tmp_path, subset=sample_subset, live="none").reused
    other = cfg.replace(precision="fp32" if want == "bf16" else "bf16")
    assert other.run_name != rec.path.name


def test_forced_bf16_trains_and_records_its_precision(sample_subset, tmp_path):
    rec = run(make_config("improved", hidden_size=4, epochs=2, precision="bf16", device="cpu"), out=tmp_path,
              subset=sample_subset, live="none")
    assert rec.metrics["precision"] == "bf16" and "as configured" in rec.metrics["precision_reason"]
    assert rec.metrics["test_acc"] > 0.34
    # the weights stay fp32 (autocast computes in bf16, the optimizer keeps fp32 state)
    assert all(v.dtype == torch.float32 for v in rec.load_model().state_dict().values() if v.is_floating_point())


def test_nan_guard_stops_and_keeps_the_record(sample_subset, tmp_path):
    cfg = make_config("template", lr=1e6, epochs=30, device="cpu")
    with pytest.raises(TrainingDiverged) as e:
        run(cfg, out=tmp_path, subset=sample_subset, live="none")
    msg = str(e.value)
    assert "epoch" in msg and "step" in msg and "learning rate" in msg
    rec = tmp_path / cfg.run_name
    import json
    metrics = json.loads((rec / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "epoch" in metrics["error"]
    history = json.loads((rec / "history.json").read_text())
    assert len(history) == len(e.value.result.history) < 30
    assert not (rec / "model.pt").exists()


def test_tta_logits_are_the_mean_over_the_mirror(sample_subset):
    r = train(make_config("improved", hidden_size=8, epochs=1, device="cpu", precision="fp32"), sample_subset)
    # the record's flip-TTA accuracies are those of the mean of the plain and the mirrored images' logits
    m = evaluate_final(r, sample_subset).metrics
    for s in ("val", "test"):
        x, y = getattr(sample_subset, f"x_{s}"), getattr(sample_subset, f"y_{s}")
        both = (predict_logits(r.model, x) + predict_logits(r.model, x.flip(2))) / 2
        assert m[f"{s}_acc_tta"] == (both.argmax(1) == y).sum().item() / len(y)


def test_configuration_label_says_what_differs_from_the_preset():
    # "auto" is resolved before a run is recorded: the preset's own runs are labelled as the preset, either way
    for precision in ("fp32", "bf16"):
        assert make_config("improved", pooling="max", precision=precision).configuration_label == \
            "improved/max (improved preset)"
    assert make_config("improved", pooling="max", epochs=3).configuration_label == "improved/max (epochs 3)"
    assert make_config("template", precision="bf16").configuration_label == "template/avg (precision bf16)"


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="pooling must be one of stride, max, avg"):
        make_config(pooling="mean")
    with pytest.raises(ConfigError, match="unknown preset"):
        make_config("fancy")
    with pytest.raises(ConfigError, match="unknown config field.*'lrate'"):
        make_config(lrate=0.1)
    with pytest.raises(ConfigError, match="classes: unknown class name 'aple'"):
        make_config(classes="aple,otter")
    with pytest.raises(ConfigError, match="epochs=0 is not allowed"):
        make_config(epochs=0)
    cfg = make_config("template", epochs=None, classes="otter apple")
    assert cfg.epochs == 500 and cfg.classes == (0, 55) and cfg.lr == 5e-3 and cfg.batch_size == 128


def test_a_last_batch_of_one_image_joins_the_previous_batch(sample_subset):
    # 129 training images at batch size 128 would leave a batch of one, which BatchNorm cannot train on
    from dataclasses import replace
    small = replace(sample_subset, x_train=sample_subset.x_train[:129], y_train=sample_subset.y_train[:129])
    r = train(make_config("improved", hidden_size=4, epochs=2, batch_size=128, device="cpu", precision="fp32"), small)
    assert r.steps == 2 and len(r.history) == 2
    r = train(make_config("template", epochs=1, batch_size=50, device="cpu"), small)
    assert r.steps == 3  # 50 + 50 + 29: a smaller last batch is kept, as in the template


def test_training_refuses_an_unresolved_precision(sample_subset):
    # "auto" is decided once, where the run is planned (run(), plan_runs): the loop never guesses
    with pytest.raises(ConfigError, match="precision='auto' is decided where a run is planned"):
        train(make_config("improved", epochs=1, dry_run=True, device="cpu"), sample_subset)


# --- the same numbers as the loop before issue 27 -------------------------------------------------------
def _loop_before_issue_27(cfg, subset):
    """The training steps of cifarlab's loop before its rewrite (commit ff5f0e6, ``Batches`` and ``train_epoch``),
    kept verbatim apart from names: a hand-set list of learning rates written into the optimizer before each step,
    an epoch's order as a permutation sliced by batch edges, an unaugmented epoch gathered once. Its per-epoch
    validation pass and statistics are left out: they run in eval mode without gradients and draw no random
    numbers, so they cannot change the weights. Returns the weights after ``cfg.epochs`` epochs."""
    import torch.nn.functional as F

    from cifarlab.engine import _rand, make_optimizer, seed_everything
    from cifarlab.hardware import autocast
    from cifarlab.models import build_model
    device = torch.device("cpu")
    gen = seed_everything(cfg.seed, device)
    data = subset.to(device)
    model = build_model(cfg).to(device)
    opt = make_optimizer(cfg, model)
    n = len(data.y_train)
    edges = list(range(0, n, min(cfg.batch_size, n))) + [n]
    if len(edges) > 2 and edges[-1] - edges[-2] == 1:
        del edges[-2]
    steps = len(edges) - 1
    spans = list(zip(edges[:steps], edges[1:steps + 1]))
    crop, flip = cfg.augment == "crop+flip", cfg.augment in ("flip", "crop+flip")
    pad = cfg.crop_padding if crop else 0
    x = pad_images(data.x_train, pad)
    total = cfg.epochs * steps
    lrs = None if cfg.schedule == "constant" else [cfg.lr * lr_factor(cfg, s, total) for s in range(total)]
    for epoch in range(cfg.epochs):
        model.train()
        perm = _rand(torch.randperm, n, gen=gen, device=device)[:edges[steps]]
        if pad or flip:
            images = (augment_batch(x, perm[a:b], pad, flip, gen) for a, b in spans)
        else:
            ordered = x[perm]
            images = (ordered[a:b] for a, b in spans)
        ys = data.y_train[perm]
        for i, (xb, (a, b)) in enumerate(zip(images, spans)):
            if lrs is not None:
                for g in opt.param_groups:
                    g["lr"] = lrs[epoch * steps + i]
            with autocast(cfg.precision, device):
                logits = model(xb)
                loss = F.cross_entropy(logits, ys[a:b], label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.state_dict()


# (the improved net at width 8, not its 16: the loop is what is compared, and width 8 trains ~3x faster here)
@pytest.mark.parametrize("preset, changes", [
    ("template", {}),                                                  # constant lr, no augmentation
    ("improved", {"precision": "fp32", "hidden_size": 8}),             # one-cycle, crop+flip, label smoothing
    ("improved", {"precision": "bf16", "pooling": "max", "schedule": "cosine", "augment": "flip", "seed": 3}),
])
def test_the_loop_gives_the_weights_of_the_loop_before_it_bit_for_bit(sample_subset, preset, changes):
    cfg = make_config(preset, epochs=2, device="cpu", **changes)
    new = train(cfg, sample_subset).model.state_dict()
    old = _loop_before_issue_27(cfg, sample_subset)
    assert list(new) == list(old)
    for k in old:
        assert torch.equal(new[k], old[k]), k
