"""The nets: raw NHWC uint8 pixels in, logits out.

``Normalize`` lives inside each model (as in the course template), so a saved or exported
model takes the same raw pixels the data layer holds, and no caller can forget it.

Pooling tactics - how a stage halves (or quarters) the feature map:

* ``stride`` - the convolution's own stride does the downsampling (its kernel is at least
  as large as its stride, so no input pixel is skipped);
* ``max`` - a stride-1 convolution, then max pooling;
* ``avg`` - a stride-1 convolution, then average pooling.

All three tactics produce the same feature-map size before the classifier, whose input
width is derived from a dummy forward pass, never typed by hand.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .config import POOLINGS, RunConfig
from .errors import CifarlabError
from .ownnet import instantiate, load_exported, lookup


class ModelFileError(CifarlabError, RuntimeError):
    """A weights file that cannot be loaded safely or does not fit its config."""

    exit_code = 1

# CIFAR-100 train-set channel statistics (published values, checked on the full data): what the
# improved net normalizes with.
TRAIN_MEAN = (0.50707516, 0.48654887, 0.44091784)
TRAIN_STD = (0.26733429, 0.25643846, 0.27615047)
# The course template's constants, kept for fidelity. Its mean is the train-set mean, rounded. Its
# "std" is not the train-set std: it is the average over images of each image's own per-channel
# pixel std (0.2008, 0.1983, 0.2022 on the full train set), about 3/4 of the dataset std - so the
# template's inputs come out about 1.3x wider than unit variance. Harmless, but not what it says.
TEMPLATE_MEAN = (0.5074, 0.4867, 0.4411)
TEMPLATE_STD = (0.2011, 0.1987, 0.2025)


class Normalize(nn.Module):
    """uint8 (or float 0..255) NHWC -> normalized float NCHW.

    mean/std are buffers: they follow ``.to(device)`` and are saved in the state_dict."""

    def __init__(self, mean=TEMPLATE_MEAN, std=TEMPLATE_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # permute of a contiguous NHWC tensor is an NCHW view in channels_last memory order:
        # no copy here, and convolutions accept it as is.
        x = x.permute(0, 3, 1, 2).float()
        return (x / 255.0 - self.mean) / self.std


def _check_pooling(pooling: str) -> None:
    """A net built directly (not through a config) gets the same refusal a config gives."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")


def _classifier_inputs(features: nn.Module) -> int:
    """Width of the flattened feature map, from a dummy forward pass at 32x32."""
    with torch.no_grad():
        return features(torch.zeros(1, 3, 32, 32)).flatten(1).shape[1]


class TemplateCNN(nn.Module):
    """The course's ``Cifar100_CNN``, with its flaws fixed and a ``pooling`` parameter.

    Layers (h = hidden_size, k = classes), after Normalize:

    * all tactics: Conv2d(3, h, 5, stride=4, padding=2) -> ReLU        (32x32 -> 8x8)
    * ``avg``:     Conv2d(h, 2h, 3, padding=1) -> ReLU -> AvgPool2d(4)  (8x8 -> 2x2)  - the template
    * ``max``:     Conv2d(h, 2h, 3, padding=1) -> ReLU -> MaxPool2d(4)  (8x8 -> 2x2)
    * ``stride``:  Conv2d(h, 2h, 4, stride=4) -> ReLU                   (8x8 -> 2x2)
    * all tactics: Flatten -> Linear(2h * 2 * 2, k)

    For h=32, k=3: avg and max have 21,699 parameters (the template's count), stride
    36,035 (its 4x4 kernel covers each pixel exactly once; a 3x3 kernel with stride 4
    would skip a row and a column of every 4).
    """

    def __init__(self, num_classes: int, hidden_size: int = 32, pooling: str = "avg"):
        super().__init__()
        _check_pooling(pooling)
        h = hidden_size
        self.pooling = pooling
        self.norm = Normalize(TEMPLATE_MEAN, TEMPLATE_STD)
        if pooling == "stride":
            stage2 = [nn.Conv2d(h, 2 * h, 4, stride=4), nn.ReLU()]
        else:
            pool = nn.MaxPool2d(4) if pooling == "max" else nn.AvgPool2d(4)
            stage2 = [nn.Conv2d(h, 2 * h, 3, padding=1), nn.ReLU(), pool]
        self.features = nn.Sequential(nn.Conv2d(3, h, 5, stride=4, padding=2), nn.ReLU(), *stage2)
        self.classifier = nn.Linear(_classifier_inputs(self.features), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.norm(x)).flatten(1))


def _conv_bn(cin: int, cout: int, pooling: str | None) -> list[nn.Module]:
    """conv3x3 -> [downsample by 2] -> BatchNorm -> ReLU.

    Pooling before BatchNorm (as airbench does) normalizes the smaller map: same function
    class, a quarter of the normalization work."""
    if pooling == "stride":
        layers = [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)]
    else:
        layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False)]
        if pooling == "max":
            layers.append(nn.MaxPool2d(2))
        elif pooling == "avg":
            layers.append(nn.AvgPool2d(2))
    return layers + [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ImprovedCNN(nn.Module):
    """A small VGG-style net that generalizes far better than the template at similar cost.

    Why each part is there:

    * 3x3 conv -> BatchNorm -> ReLU blocks: small kernels stacked see as far as large ones with
      fewer weights; BatchNorm lets a high learning rate (one-cycle) train a deep-ish stack in
      few epochs.
    * Three downsampling stages (32 -> 16 -> 8 -> 4), each by the chosen pooling tactic, with the
      width doubling as the map shrinks, so each stage costs about the same.
    * A stem at full resolution: the template's 5x5 stride-4 first layer throws away detail
      before it has seen it; at 32x32 pixels there is little to spare.
    * Global average pooling head: the classifier sees "is the feature present", not where,
      and has 8w*k weights instead of a large flattened map - less to overfit on 450 images a class.
    * Dropout before the classifier: with a few hundred images per class, a little helps.

    Layers (w = hidden_size): stem conv(3, w) at 32x32; conv(w, 2w) down -> 16x16;
    conv(2w, 4w) down -> 8x8; conv(4w, 4w); conv(4w, 8w) down -> 4x4; global average pool;
    dropout; Linear(8w, k).
    """

    def __init__(self, num_classes: int, hidden_size: int = 32, pooling: str = "max", dropout: float = 0.1):
        super().__init__()
        _check_pooling(pooling)
        w = hidden_size
        self.pooling = pooling
        self.norm = Normalize(TRAIN_MEAN, TRAIN_STD)
        self.features = nn.Sequential(
            *_conv_bn(3, w, None),
            *_conv_bn(w, 2 * w, pooling),
            *_conv_bn(2 * w, 4 * w, pooling),
            *_conv_bn(4 * w, 4 * w, None),
            *_conv_bn(4 * w, 8 * w, pooling),
            nn.AdaptiveAvgPool2d(1),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(_classifier_inputs(self.features.eval()), num_classes)
        self.features.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(self.norm(x)).flatten(1)))


class OwnNet(nn.Module):
    """Your own net (see :mod:`cifarlab.ownnet`) behind the models' Normalize: raw uint8 NHWC pixels in,
    like the shipped nets, while your ``forward`` gets float NCHW, normalized."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.norm = Normalize(TRAIN_MEAN, TRAIN_STD)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


class Exported(nn.Module):
    """A reloaded torch.export program (:func:`cifarlab.ownnet.load_exported`) used like any model. Its graph
    was exported in eval mode and is fixed: train()/eval() only set the flag."""

    def __init__(self, program: nn.Module):
        super().__init__()
        self.program = program

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)

    def train(self, mode: bool = True) -> "Exported":
        self.training = mode
        return self


def build_model(config: RunConfig) -> nn.Module:
    """The one builder: the config's model, pooling, width, class count (all checked by RunConfig)."""
    k = len(config.classes)
    if config.net:
        net = lookup(config.model, config.net)
        return OwnNet(instantiate(net, k, config.pooling))
    if config.model == "template":
        return TemplateCNN(k, config.hidden_size, config.pooling)
    return ImprovedCNN(k, config.hidden_size, config.pooling, config.dropout)


def load_state_dict_safely(path, device="cpu") -> dict:
    """``torch.load`` with ``weights_only=True``: tensors only, no pickled code is run."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path} does not exist; train a model (or run the comparison step) first")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise ModelFileError(f"{path} is not a state_dict that loads with weights_only=True ({e}). "
                             f"Whole pickled models are not loaded: save model.state_dict() instead.") from e


def load_model(config: RunConfig, state_path, device="cpu") -> nn.Module:
    """Rebuild ``config``'s architecture and load its weights from ``state_path`` (safely), in eval mode.
    Your own net is reloaded from the torch.export program beside the weights: no class needed."""
    if config.net:
        return Exported(load_exported(Path(state_path).with_name("model.pt2"))).to(device).eval()
    model = build_model(config)
    state = load_state_dict_safely(state_path, device)      # its own errors say what is wrong with the file
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # missing/unexpected keys, wrong shapes
        raise ModelFileError(f"{state_path} does not fit the model its config describes ({str(e).splitlines()[0]}); "
                             f"the weights and config.json come from different runs") from None
    return model.to(device).eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def summary(model: nn.Module) -> str:
    """Layer-by-layer output shapes and parameter counts for one 32x32 image."""
    lines = [f"{'layer':44s} {'output shape':>18s} {'params':>9s}"]
    x = torch.zeros(1, 32, 32, 3, dtype=torch.uint8, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    names = {mod: name for name, mod in model.named_modules() if name and not list(mod.children())}   # the leaves

    def hook(mod, inp, out):
        n = sum(p.numel() for p in mod.parameters(recurse=False))
        lines.append(f"{names[mod] + ' ' + type(mod).__name__:44s} {str(tuple(out.shape)):>18s} {n:>9,d}")
    hooks = [mod.register_forward_hook(hook) for mod in names]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    model.train(was_training)
    lines.append(f"total parameters: {count_parameters(model):,d}")
    return "\n".join(lines)
