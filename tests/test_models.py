import pytest
import torch
from torch import nn

from cifarlab.config import POOLINGS, make_config
from cifarlab.models import ImprovedCNN, Normalize, TemplateCNN, build_model, count_parameters, summary


def test_template_avg_is_the_course_model():
    m = TemplateCNN(3, 32, "avg")
    assert count_parameters(m) == 21_699
    convs = [layer for layer in m.features if isinstance(layer, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (3, 32, (5, 5), (4, 4), (2, 2)), (32, 64, (3, 3), (1, 1), (1, 1))]
    assert isinstance(m.features[-1], nn.AvgPool2d) and m.classifier.in_features == 256


def test_max_has_the_template_count_and_stride_its_own():
    assert count_parameters(TemplateCNN(3, 32, "max")) == 21_699
    assert count_parameters(TemplateCNN(3, 32, "stride")) == 36_035


@pytest.mark.parametrize("cls", [TemplateCNN, ImprovedCNN])
@pytest.mark.parametrize("k", [2, 3, 5, 10, 20])
def test_shapes_for_every_tactic_and_class_count(cls, k):
    x = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    feature_shapes = set()
    for pooling in POOLINGS:
        m = cls(k, 16, pooling).eval()
        assert m(x).shape == (4, k)
        feature_shapes.add(tuple(m.features(m.norm(x)).shape))
        # the classifier's width is derived from the features, not typed
        assert m.classifier.in_features == m.features(m.norm(x)).flatten(1).shape[1]
    assert len(feature_shapes) == 1, f"tactics disagree on the final feature map: {feature_shapes}"


@pytest.mark.parametrize("cls", [TemplateCNN, ImprovedCNN])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_no_stride_larger_than_its_kernel(cls, pooling):
    for mod in cls(3, 16, pooling).modules():
        if isinstance(mod, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k = mod.kernel_size if isinstance(mod.kernel_size, tuple) else (mod.kernel_size,) * 2
            s = mod.stride if isinstance(mod.stride, tuple) else (mod.stride,) * 2
            assert all(si <= ki for si, ki in zip(s, k)), f"{mod} skips input pixels"


def test_hidden_size_is_used():
    assert TemplateCNN(3, 8, "avg").features[0].out_channels == 8
    assert TemplateCNN(3, 8, "avg").classifier.in_features == 64
    assert count_parameters(TemplateCNN(3, 8, "avg")) < count_parameters(TemplateCNN(3, 32, "avg"))


def test_normalize_buffers_follow_to_and_state_dict():
    n = Normalize()
    assert {"mean", "std"} <= set(n.state_dict())
    n = n.to(torch.float64)
    assert n.mean.dtype == torch.float64  # buffers move with the module
    m = build_model(make_config("template"))
    assert "norm.mean" in m.state_dict() and "norm.std" in m.state_dict()
    x = torch.full((1, 32, 32, 3), 255, dtype=torch.uint8)
    out = Normalize()(x)
    assert out.shape == (1, 3, 32, 32)
    assert torch.allclose(out[0, :, 0, 0], (1 - Normalize().mean.flatten()) / Normalize().std.flatten())


def test_builder_and_summary():
    m = build_model(make_config("improved", classes="vehicles_1", pooling="avg"))
    assert isinstance(m, ImprovedCNN) and m.classifier.out_features == 5
    text = summary(m)
    assert "total parameters" in text and f"{count_parameters(m):,d}" in text


@pytest.mark.parametrize("net", [TemplateCNN, ImprovedCNN])
def test_a_net_built_directly_refuses_an_unknown_pooling(net):
    # a student building the net in a cell gets the config's refusal, not a quietly different net
    with pytest.raises(ValueError, match="pooling must be one of stride, max, avg; got 'Max'"):
        net(3, pooling="Max")
