"""One frozen config drives a run: from a notebook's parameters cell or the command line,
through the engine, into the run's record on disk (``config.json``).

It reads top down: :class:`RunConfig` - its fields, each with a default, then its identity (what
makes two runs the same run, configuration or experiment: docs/statistics.md); the presets, named
sets of overrides; :func:`make_config` / :func:`notebook_config`, the only ways a config is made;
then the checks.

Checks. Values are checked - and coerced where unambiguous, since papermill, YAML and JSON hand
over strings ("10" -> 10, "false" -> False) - when the config is made, before any data loads; an
error names the field, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import typing
from dataclasses import dataclass, fields

from .classes import COARSE_NAMES, FINE_NAMES, TRAIN_PER_CLASS, select_classes, superclass_members
from .errors import CifarlabError
from .ownnet import OWN_POOLING, is_own

POOLINGS = ("stride", "max", "avg")
# The fields that take one of a few words, and those words.
CHOICES = {"model": ("template", "improved"), "pooling": POOLINGS, "optimizer": ("sgd", "adamw"),
           "schedule": ("constant", "onecycle", "cosine"), "augment": ("none", "flip", "crop+flip"),
           "select": ("last", "best"), "precision": ("auto", "fp32", "bf16")}

# Fields added after records were first written: absent from a config (its record, its identity) while at
# their default, so every record written before them keeps its name, identity and checksum.
ADDED_LATER = {"pretrain_epochs": 0}
# Where a run runs and how it is shown - not what it computes: kept out of its identity.
RUNTIME_FIELDS = ("device", "plot_every")
# What makes two runs comparable at all: the same data.
EXPERIMENT_FIELDS = ("classes", "val_fraction", "split_seed")


class ConfigError(CifarlabError, ValueError):
    """A config field has a value it cannot take; the message names the field and what is allowed."""


@dataclass(frozen=True)
class RunConfig:
    # what to learn
    classes: tuple[int, ...] = (0, 55, 58)   # fine ids; names and superclasses are resolved on creation
    val_fraction: float = 0.1                # carved from train, stratified; chooses epochs and configs
    split_seed: int = 0                      # the same split for every run, so validation numbers compare
    # the net
    model: str = "template"                  # a shipped net, or your own nn.Module's class name (see ownnet)
    net: str = ""                            # your own net's fingerprint (source and structure); "" for a shipped net
    pooling: str = "avg"
    hidden_size: int = 32                    # width of the first conv; later stages are multiples of it
    dropout: float = 0.0
    # the recipe
    epochs: int = 500
    pretrain_epochs: int = 0                 # first learn from every class you did not pick (0: off; see pretrain)
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 5e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_fraction: float = 0.25            # onecycle/cosine: share of steps spent warming up
    label_smoothing: float = 0.0
    augment: str = "none"
    crop_padding: int = 4
    tta_flip: bool = False                   # also report accuracy averaged over the image and its mirror
    select: str = "last"                     # keep the last epoch, or the best on validation
    precision: str = "fp32"                  # training arithmetic: fp32, bf16 autocast, or auto (bf16 where native)
    # the run
    seed: int = 0
    dry_run: bool = False                    # a couple of steps only: smoke tests
    device: str = "auto"                     # runtime: where it runs
    plot_every: int | None = None            # runtime: redraw the live figure every N epochs (None: ~25 redraws)

    def __post_init__(self):
        for name, value in _validated(self).items():
            object.__setattr__(self, name, value)

    # --- identity ---------------------------------------------------------------------------
    def identity(self) -> dict:
        """Every field that can change the run's numbers (all but :data:`RUNTIME_FIELDS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    @property
    def run_id(self) -> str:
        """The run: two runs with the same identity compute the same numbers, so its record is reused."""
        return _digest(self.identity())

    @property
    def config_id(self) -> str:
        """The configuration: the identity minus the seed, what a comparison row averages over seeds."""
        return _digest({k: v for k, v in self.identity().items() if k != "seed"})

    @property
    def experiment_id(self) -> str:
        """The experiment: the data (classes, validation fraction, split seed), what one comparison covers."""
        return _digest({k: self.to_dict()[k] for k in EXPERIMENT_FIELDS})

    @property
    def net_name(self) -> str:
        """The net as comparisons name it: its model, ``+pretrained`` when it starts from a pretrained backbone."""
        return self.model + ("+pretrained" if self.pretrain_epochs else "")

    @property
    def run_name(self) -> str:
        """The record's folder name: readable, short whatever the class list, unique per identity."""
        k = len(self.classes)
        cls = "c" + "-".join(map(str, self.classes)) if k <= 5 else f"{k}classes"
        dry = "dryrun_" if self.dry_run else ""
        return f"{dry}{self.net_name}_{self.pooling}_seed{self.seed}_{cls}_{self.run_id[:8]}"

    @property
    def experiment_name(self) -> str:
        """A readable, unique name of the experiment (its classes and split), usable as a folder name."""
        groups = [c for c in COARSE_NAMES if superclass_members(c) == self.classes]
        if groups:
            name = groups[0]
        elif len(self.classes) <= 4:
            name = "-".join(FINE_NAMES[i] for i in self.classes)
        else:
            name = f"{len(self.classes)}-classes-{self.experiment_id[:6]}"
        if (self.val_fraction, self.split_seed) != (0.1, 0):
            name += f"_val{self.val_fraction:g}_split{self.split_seed}"
        return name

    @property
    def experiment_label(self) -> str:
        """The experiment in words, for people."""
        split = (f"validation {self.val_fraction:.0%} of train (split seed {self.split_seed})"
                 if self.val_fraction else "no validation split")
        return f"classes {', '.join(f'{i}:{FINE_NAMES[i]}' for i in self.classes)}; {split}"

    @property
    def configuration_label(self) -> str:
        """The configuration in words: model and pooling, and how its recipe differs from its preset's (your own
        net: from the nearest preset's)."""
        def differs(preset):
            base = make_config(preset)
            # A preset's precision "auto" is resolved (fp32 or bf16) before a run is recorded: either is the preset's.
            return [f"{f.name.replace('_', ' ')} {getattr(self, f.name)}" for f in fields(self)
                    if f.name not in EXPERIMENT_FIELDS + RUNTIME_FIELDS + ("seed", "model", "net", "pooling")
                    and getattr(self, f.name) != getattr(base, f.name)
                    and not (f.name == "precision" and base.precision == "auto")]
        nearest = self.net_name if self.net_name in PRESETS else min(PRESETS, key=lambda p: len(differs(p)))
        same = f"{nearest} {'preset' if self.net_name in PRESETS else 'recipe'}"
        return f"{self.net_name}/{self.pooling} ({', '.join(differs(nearest)) or same})"

    @property
    def title(self) -> str:
        return f"{self.net_name} net, {self.pooling} pooling, seed {self.seed}"

    # --- (de)serialization --------------------------------------------------------------------
    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        for name, default in ADDED_LATER.items():   # left out at its default: older records keep their identity
            if d[name] == default:
                del d[name]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping of field names to values, got {type(d).__name__}")
        _check_known(d)
        return cls(**d)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


# --- presets -------------------------------------------------------------------------------------
PRESETS: dict[str, dict] = {
    # The course's recipe as written (Cifar100_CNN, SGD at lr 5e-3, 500 epochs, the last epoch kept, fp32 to
    # reproduce its numbers): RunConfig's defaults are that recipe.
    "template": dict(model="template"),
    # The better net and recipe; each value chosen on validation splits (benchmarks/recipe_search.py).
    "improved": dict(
        model="improved",
        pooling="max",           # ImprovedCNN's own default; every tactic is one --pooling away
        hidden_size=16,          # 16/32/64/128 channels: width 16 beat 12 by ~2 points of val acc
        epochs=30,               # one-cycle reaches its plateau by ~25 epochs on 3-5 classes
        batch_size=128,
        optimizer="sgd",
        lr=0.1,                  # the one-cycle peak; BatchNorm makes it safe
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,       # with BatchNorm this mainly keeps the effective lr up
        schedule="onecycle",
        warmup_fraction=0.2,
        augment="crop+flip",     # 450 images a class: translations and mirrors are free data
        crop_padding=4,
        label_smoothing=0.1,     # softer targets: less overconfidence on few images
        dropout=0.1,
        tta_flip=True,           # reported beside plain accuracy, never instead
        select="last",           # one-cycle ends at lr 0: the last epoch is the settled one
        precision="auto",        # bf16 where the hardware has it: 1.5x per epoch, accuracy within noise
                                 # (benchmarks/precision.py); fp32 elsewhere
    ),
}
# The improved net, first trained on the train images of every class you did not pick (cifarlab.pretrain),
# then fine-tuned on yours with a fresh classifier (benchmarks/transfer.py measures what it gains).
PRESETS["improved+pretrained"] = dict(
    PRESETS["improved"],
    pretrain_epochs=12,          # ~47,500 images an epoch; measured in benchmarks/transfer_results.md
    lr=0.05,                     # half the scratch peak: fine-tuning keeps what pretraining learned
)


def make_config(preset: str | None = None, **overrides) -> RunConfig:
    """A config from a preset (``template`` / ``improved`` / ``improved+pretrained``) with fields overridden.

    ``None`` values are ignored, so a notebook can pass its parameters through unchanged."""
    if preset and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    base = dict(PRESETS[preset]) if preset else {}
    _check_known(overrides)
    base.update({k: v for k, v in overrides.items() if v is not None})
    if not is_own(base.get("model")):
        return RunConfig(**base)
    # Your own net: everything else is checked first (no net is built for a config with a typo), then the
    # net is built, tried on a dummy batch and fingerprinted for the number of classes and the pooling.
    from .ownnet import register
    cfg = RunConfig(**{**base, "model": "improved", "pooling": base.get("pooling", "max").replace(OWN_POOLING, "max")})
    name, pooling, fingerprint = register(base["model"], len(cfg.classes), base.get("pooling", cfg.pooling), cfg.device)
    return cfg.replace(model=name, pooling=pooling, net=fingerprint)


def notebook_config(model, classes, pooling, seed, epochs=None, overrides=None, **more) -> RunConfig:
    """The config of a training notebook's parameters (``MODEL`` is the preset, ``OVERRIDES`` a mapping of
    any other field, refused by the planner when it sets a field the parameters set): what the notebook trains
    and what ``make run-all`` checks for an existing record."""
    named = {"classes": classes, "pooling": pooling, "seed": seed, "epochs": epochs, **more}
    # your own net (a class, or FILE.py:CLASS) trains with the improved recipe; make_config takes any preset
    preset, named["model"] = ("improved", model) if is_own(model) else (model, None)
    return make_config(preset, **{**(overrides or {}), **{k: v for k, v in named.items() if v is not None}})


# --- checking and coercing values ------------------------------------------------------------
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_MAX_SEED = 2 ** 63 - 1


def coerce(name: str, value, typ):
    """``value`` as ``typ`` (bool, int, float, str) when that is unambiguous, else a ConfigError naming
    ``name``: the one parser of every value from papermill, YAML, JSON, make and the environment
    (booleans: 0/false/no/off, 1/true/yes/on)."""
    bad = lambda what: ConfigError(f"{name}={value!r} is not allowed: expected {what}")
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise bad("true or false")
    if typ is int:
        if isinstance(value, bool):
            raise bad("a whole number")
        if hasattr(value, "__index__"):
            return int(value.__index__())
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise bad("a whole number")
    if typ is float:
        if isinstance(value, bool):
            raise bad("a number")
        try:
            f = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise bad("a number") from None
        if not math.isfinite(f):
            raise bad("a finite number")
        return f
    if typ is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value.strip().lower()
    raise TypeError(typ)


def _in(lo, hi, lo_open=False, hi_open=False):
    def check(v):
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    return check


_MIN_VAL, _MAX_VAL = 1 / TRAIN_PER_CLASS, 1 - 1 / TRAIN_PER_CLASS
# field -> (test, what is allowed): ranges checked after coercion.
RANGES = {
    "val_fraction": (lambda v: v == 0 or _MIN_VAL <= v <= _MAX_VAL,
                     f"0 (no validation split) or from {_MIN_VAL:g} to {_MAX_VAL:g}, so every class keeps at least "
                     f"one validation and one training image of its {TRAIN_PER_CLASS}"),
    "split_seed": (_in(0, _MAX_SEED), "a whole number >= 0"),
    "hidden_size": (_in(1, 4096), "a whole number from 1 to 4096"),
    "dropout": (_in(0, 1, hi_open=True), "a number in [0, 1)"),
    "epochs": (_in(1, 1_000_000), "a whole number >= 1"),
    "pretrain_epochs": (_in(0, 1_000_000), "a whole number >= 0 (0: no pretraining)"),
    "batch_size": (_in(1, 1_000_000), "a whole number >= 1"),
    "lr": (_in(0, math.inf, lo_open=True, hi_open=True), "a number > 0"),
    "momentum": (_in(0, 1, hi_open=True), "a number in [0, 1)"),
    "weight_decay": (_in(0, math.inf, hi_open=True), "a number >= 0"),
    "warmup_fraction": (_in(0, 1, hi_open=True), "a number in [0, 1)"),
    "label_smoothing": (_in(0, 1, hi_open=True), "a number in [0, 1)"),
    "crop_padding": (_in(0, 31),
                     "a whole number from 0 to 31 (reflect padding must be smaller than the 32-pixel image)"),
    "seed": (_in(0, _MAX_SEED), "a whole number >= 0"),
    "plot_every": (lambda v: v is None or v >= 1, "a whole number >= 1, or None for about 25 redraws a run"),
    "device": (_DEVICE_RE.match, "one of auto, cpu, cuda, cuda:N, mps"),
}


def check_range(field: str, value, said: str | None = None):
    """``value`` (coerced) within :data:`RANGES` for ``field``, else a ConfigError; ``said``: the value as the
    caller spells it (``EPOCHS=0``, ``--epochs 0``), by default ``field=value``."""
    if field in RANGES and not RANGES[field][0](value):
        raise ConfigError(f"{said or f'{field}={value!r}'} is not allowed: expected {RANGES[field][1]}")
    return value


def _validated(cfg: RunConfig) -> dict:
    hints = typing.get_type_hints(RunConfig)
    out = {}
    for f in fields(RunConfig):
        value = getattr(cfg, f.name)
        if f.name == "classes":
            try:
                value = select_classes(value).ids
            except ValueError as e:
                raise ConfigError(f"classes: {e}") from None
        elif value is None and f.name == "plot_every":
            pass
        elif f.name == "model" and cfg.net:   # your own net: its class name, as written
            if not isinstance(value, str) or not value.strip().isidentifier():
                raise ConfigError(f"model={value!r} is not allowed: your own net's model is its class name")
            value = value.strip()
        else:   # ``int | None`` (plot_every, not None here) is coerced as an int
            args = typing.get_args(hints[f.name])
            value = coerce(f.name, value, args[0] if args else hints[f.name])
        if f.name == "net" and value and not re.fullmatch(r"[0-9a-f]{12}", value):
            raise ConfigError(f"net={value!r} is not allowed: it is the fingerprint cifarlab computes for your own "
                              f"net (make_config(model=MyNet) sets it)")
        if f.name in CHOICES and value not in CHOICES[f.name] and not (
                cfg.net and (f.name == "model" or (f.name == "pooling" and value == OWN_POOLING))):
            own = {"model": " or your own nn.Module class (make_config(model=MyNet), --model FILE.py:CLASS)",
                   "pooling": f" ({OWN_POOLING} for your own net without a pooling argument)"}.get(f.name, "")
            raise ConfigError(f"{f.name}={value!r} is not allowed: {f.name} must be one of "
                              f"{', '.join(CHOICES[f.name])}{own}")
        out[f.name] = check_range(f.name, value)
    # rules between fields
    if out["select"] == "best" and out["val_fraction"] == 0:
        raise ConfigError("select='best' needs a validation split: set val_fraction > 0 (or select='last')")
    if out["optimizer"] == "sgd" and out["nesterov"] and out["momentum"] == 0:
        raise ConfigError("nesterov=True needs momentum > 0: set momentum (e.g. 0.9) or nesterov=False")
    if out["pretrain_epochs"] and len(out["classes"]) == 100:
        raise ConfigError("pretrain_epochs needs classes you did not pick to learn from; with all 100 classes "
                          "chosen there are none: set pretrain_epochs=0")
    if out["model"] != "template" and out["batch_size"] < 2:
        raise ConfigError(f"batch_size=1 is not allowed for the {out['model']} net: BatchNorm needs at least 2 "
                          f"images a batch")
    return out


def _check_known(d: dict) -> None:
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        close = {u: difflib.get_close_matches(u, known, n=1) for u in unknown}
        hints = "; ".join(f"{u!r} (did you mean {c[0]!r}?)" if c else repr(u) for u, c in close.items())
        raise ConfigError(f"unknown config field(s) {hints}; known fields: {', '.join(sorted(known))}")

