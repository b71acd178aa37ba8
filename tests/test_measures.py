"""What else a pooling tactic changes - shift robustness, FLOPs, latency - on models whose answers are known."""
import numpy as np
import pytest
import torch
from torch import nn

from cifarlab.config import make_config
from cifarlab.engine import predict_logits
from cifarlab.evaluation import (
    SHIFTS,
    forward_flops,
    measures,
    random_shift_pairs,
    shift_consistency,
    shift_images,
    shift_robustness,
)
from cifarlab.models import Normalize, build_model


def torch_predictor(model: nn.Module):
    """images -> predicted classes, with a PyTorch model (what the measures ask of a model)."""
    return lambda x: predict_logits(model, x).argmax(1).cpu().numpy()


def test_shift_repeats_the_border_pixels():
    x = torch.arange(2 * 4 * 4 * 1, dtype=torch.uint8).reshape(2, 4, 4, 1)
    right = shift_images(x, 1, 0)
    # content moves right by one; the first column repeats the old first column
    assert torch.equal(right[:, :, 1:], x[:, :, :-1]) and torch.equal(right[:, :, 0], x[:, :, 0])
    up = shift_images(x, 0, -2)
    assert torch.equal(up[:, :2], x[:, 2:]) and torch.equal(up[:, 2], x[:, 3]) and torch.equal(up[:, 3], x[:, 3])
    assert torch.equal(shift_images(x, 0, 0), x)
    # one shift per image: the same as shifting each image alone
    per = shift_images(x, torch.tensor([1, -3]), torch.tensor([2, 0]))
    assert torch.equal(per[0], shift_images(x[:1], 1, 2)[0]) and torch.equal(per[1], shift_images(x[1:], -3, 0)[0])


class TopLeft(nn.Module):
    """Predicts the brightest channel of the top-left pixel: which shifts change its answer is known."""

    def forward(self, x):
        return x[:, 0, 0, :].float()


def test_shift_measures_of_a_model_whose_answers_are_known():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (400, 32, 32, 3), dtype=torch.uint8, generator=g)
    y = x[:, 0, 0, :].argmax(1)
    r = shift_robustness(torch_predictor(TopLeft()), x, y)
    # shifting right or down repeats the top-left pixel: still right; left or up brings in other pixels
    for axis in ("horizontal", "vertical"):
        acc = dict(zip(r["shift_acc"]["shifts"], r["shift_acc"][axis]))
        assert all(acc[s] == 1.0 for s in SHIFTS if s >= 0)
        assert all(acc[s] < 0.5 for s in SHIFTS if s < 0)  # about chance: 1/3
    # consistency, computed here by hand from the same pairs: which source pixel lands at (0, 0)
    pairs = random_shift_pairs(len(x))
    src = lambda dx, dy: x[torch.arange(len(x)), (-dy).clamp(0, 31), (-dx).clamp(0, 31)].argmax(1)
    want = float((src(pairs[0, 0], pairs[0, 1]) == src(pairs[1, 0], pairs[1, 1])).float().mean())
    assert r["shift_consistency"] == pytest.approx(want)
    assert shift_consistency(torch_predictor(TopLeft()), x, pairs) == pytest.approx(want)


def test_uniform_images_are_invariant_for_any_model():
    """A plain-colour image is the same image after any edge-padded shift: every model is consistent on it."""
    colours = torch.randint(0, 256, (60, 1, 1, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    x = colours.expand(60, 32, 32, 3).contiguous()
    model = build_model(make_config("improved", pooling="avg", hidden_size=8)).eval()
    y = torch.from_numpy(torch_predictor(model)(x))
    r = shift_robustness(torch_predictor(model), x, y)
    assert r["shift_consistency"] == 1.0
    assert r["shift_acc"]["horizontal"] == r["shift_acc"]["vertical"] == [1.0] * len(SHIFTS)


def test_flops_of_a_tiny_fixed_network_match_the_count_by_hand():
    net = nn.Sequential(Normalize(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 16 * 16, 5))
    conv = 2 * (32 * 32 * 4) * (3 * 3 * 3)      # 2 FLOPs per multiply-add, per output element
    linear = 2 * (4 * 16 * 16) * 5
    assert forward_flops(net) == conv + linear == 221_184 + 10_240


def test_measures_of_a_real_model(sample_subset):
    model = build_model(make_config("template", pooling="max")).eval()
    m = measures(model, sample_subset.x_test, sample_subset.y_test)
    assert m["params"] == 21_699 and m["flops"] == forward_flops(model)
    assert 0 < m["latency_ms_b1"] < m["latency_ms_b256"] and "onnxruntime" in m["latency_machine"]
    # onnxruntime's predictions (used for the shift measures) are PyTorch's
    assert m["shift_acc"] == shift_robustness(torch_predictor(model), sample_subset.x_test,
                                              sample_subset.y_test)["shift_acc"]
    assert m["measure_seconds"] > 0


def test_records_carry_the_measures_and_the_comparison_shows_them(template_runs):
    from cifarlab.comparison import compare
    from cifarlab.figures import plot_shift_accuracy
    from cifarlab.records import find_records
    recs = find_records(template_runs)
    assert sorted(r.config.pooling for r in recs) == ["max", "stride"]
    for rec in recs:
        m = rec.metrics
        assert {"shift_acc", "shift_consistency", "params", "flops", "latency_ms_b1", "latency_ms_b256"} <= set(m)
        assert m["shift_acc"]["horizontal"][SHIFTS.index(0)] == pytest.approx(m["test_acc"])  # shift 0: the test set
    c = compare(template_runs)
    text = c.tradeoffs()
    assert "shift consist." in text and "MFLOPs" in text and "ms/image" in text
    stride, mx = (g for g in c.groups)
    assert stride.mean("mflops") < mx.mean("mflops")  # stride skips the full-resolution conv work
    assert "template/stride: " in text and "the fewest FLOPs" in text.split("template/stride: ")[1].split("\n")[0]
    fig = plot_shift_accuracy(c.groups)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2
    assert np.allclose(fig.axes[0].lines[0].get_ydata(), stride.records[0].metrics["shift_acc"]["horizontal"])
