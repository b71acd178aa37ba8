"""One frozen config drives a run: from a notebook's parameters cell or the command line,
through the engine, into the run's record on disk (``config.json``).

Every field has a default. Presets are named sets of overrides:

* ``template`` - the course's recipe, verbatim: template CNN, SGD lr 5e-3 momentum 0.9,
  batch 128, 500 epochs, no augmentation, constant learning rate, the last epoch kept.
* ``improved`` - the better net and recipe (see ``cifarlab.models.ImprovedCNN``): device-side
  crop+flip augmentation, label smoothing, one-cycle schedule, weight decay, flip TTA.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields

from .classes import ClassSelection, select_classes

MODELS = ("template", "improved")
POOLINGS = ("stride", "max", "avg")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "onecycle", "cosine")
AUGMENTS = ("none", "flip", "crop+flip")
SELECTS = ("last", "best")
DEVICES = ("auto", "cpu", "cuda", "mps")


class ConfigError(ValueError):
    """A config field has a value it cannot take; the message names the field and the choices."""


@dataclass(frozen=True)
class RunConfig:
    # what to learn
    classes: tuple[int, ...] = (0, 55, 58)   # fine ids; names and superclasses are resolved on creation
    val_fraction: float = 0.1                # carved from train, stratified; chooses epochs and configs
    split_seed: int = 0                      # the same split for every run, so validation numbers compare
    # the net
    model: str = "template"
    pooling: str = "avg"
    hidden_size: int = 32                    # width of the first conv; later stages are multiples of it
    dropout: float = 0.0
    # the recipe
    epochs: int = 500
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 5e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_fraction: float = 0.25            # one-cycle: share of steps spent warming up
    label_smoothing: float = 0.0
    augment: str = "none"
    crop_padding: int = 4
    tta_flip: bool = False                   # also report accuracy averaged over the image and its mirror
    select: str = "last"                     # keep the last epoch, or the best on validation
    # the run
    seed: int = 0
    device: str = "auto"
    plot_every: int = 20                     # redraw the live figure every N epochs (notebooks)
    dry_run: bool = False                    # a couple of steps only: smoke tests

    def __post_init__(self):
        # Resolve names / superclasses to ids here, so everything downstream sees ids.
        try:
            ids = select_classes(self.classes).ids
        except ValueError as e:
            raise ConfigError(f"classes: {e}") from None
        object.__setattr__(self, "classes", ids)
        for name, choices in (("model", MODELS), ("pooling", POOLINGS), ("optimizer", OPTIMIZERS),
                              ("schedule", SCHEDULES), ("augment", AUGMENTS), ("select", SELECTS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")
        if not (self.device in DEVICES or self.device.startswith(("cuda:", "mps:"))):
            raise ConfigError(f"device must be one of {', '.join(DEVICES)} (or cuda:N); got {self.device!r}")
        for name in ("epochs", "batch_size", "hidden_size", "plot_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a positive integer; got {getattr(self, name)!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1); got {self.val_fraction}")
        if self.select == "best" and self.val_fraction == 0:
            raise ConfigError("select='best' needs a validation split: set val_fraction > 0")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive; got {self.lr}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError("dropout and label_smoothing must be in [0, 1)")

    @property
    def selection(self) -> ClassSelection:
        return ClassSelection(self.classes)

    @property
    def run_name(self) -> str:
        """A stable folder name: one record per (model, pooling, seed, classes)."""
        cls = "-".join(str(i) for i in self.classes)
        return f"{self.model}_{self.pooling}_seed{self.seed}_c{cls}" + ("_dryrun" if self.dry_run else "")

    @property
    def title(self) -> str:
        return f"{self.model} net, {self.pooling} pooling, seed {self.seed}"

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        return cls(**{k: (tuple(v) if k == "classes" else v) for k, v in d.items()})


PRESETS: dict[str, dict] = {
    "template": dict(model="template", hidden_size=32, epochs=500, batch_size=128, optimizer="sgd", lr=5e-3,
                     momentum=0.9, weight_decay=0.0, schedule="constant", augment="none", label_smoothing=0.0,
                     tta_flip=False, select="last", dropout=0.0),
    "improved": dict(model="improved", hidden_size=16, epochs=30, batch_size=128, optimizer="sgd", lr=0.1,
                     momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="onecycle", warmup_fraction=0.2,
                     augment="crop+flip", label_smoothing=0.1, tta_flip=True, select="last", dropout=0.1,
                     plot_every=2),
}


def make_config(preset: str | None = None, **overrides) -> RunConfig:
    """A config from a preset (``template`` / ``improved``) with fields overridden.

    ``None`` values are ignored, so a notebook can pass its parameters through unchanged."""
    base: dict = {}
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        base = dict(PRESETS[preset])
    known = {f.name for f in fields(RunConfig)}
    for k, v in overrides.items():
        if k not in known:
            raise ConfigError(f"unknown config field {k!r}; known: {', '.join(sorted(known))}")
        if v is not None:
            base[k] = v
    return RunConfig(**base)


__all__ = ["RunConfig", "make_config", "PRESETS", "ConfigError", "MODELS", "POOLINGS"]
