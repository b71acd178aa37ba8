"""Learn from the classes you did not pick: pretrain on every other CIFAR-100 class, then fine-tune on yours.

A run with ``pretrain_epochs`` > 0 (the ``improved+pretrained`` preset) starts from a *backbone*: the same
net and tactic, trained first with the same recipe on the training images of every class outside the
experiment (47,500 images when you picked 3 classes) - never an image of your classes, never a test image.
Then the backbone's classifier is replaced by a fresh one for your classes, and the whole net trains as
any run does (fine-tuning): what it learned about edges, textures and shapes carries over.

A backbone is made once and reused by every seed and run that asks for the same one. Its identity is its
own config: the classes it learned (all but yours), the net and tactic, the recipe, ``pretrain_epochs``
and its seed (:data:`BACKBONE_SEED`, whatever the run's). It is kept beside the runs, written like a
record (staged, then renamed into place: never half a backbone)::

    <out>/backbones/<net>_<pooling>_without-<your classes>_<id>/
        backbone.json    its config, identity, images, seconds and per-epoch history
        backbone.pt      its weights (state_dict, classifier included)

A run's record says which backbone it started from (``metrics.json``: ``backbone``).
"""
from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import RunConfig
from .data import data_source, load_subset
from .engine import train
from .errors import CifarlabError
from .files import Owned, building, publish_dir, read_json, write_json
from .models import build_model, load_state_dict_safely

BACKBONE_SEED = 0        # one backbone for every seed of a run: seeds then vary the fine-tuning only
VAL_FRACTION = 0.02      # of the other classes' train images: shown while pretraining, chooses nothing
BACKBONE = Owned(("backbone.json",), frozenset({"backbone.json", "backbone.pt"}), "--out", "pretrained backbone")


class PretrainError(CifarlabError, ValueError):
    """Pretraining cannot start as asked (the data it needs is not here); nothing was trained."""


@dataclass
class Backbone:
    """A pretrained net: its config (what it learned, how), its weights, and what a run's record says of it."""

    config: RunConfig
    state: dict
    info: dict

    def weights_for(self, cfg: RunConfig) -> dict:
        """The backbone's weights for ``cfg``'s net, all but the classifier's: those have a shape that depends
        on the number of classes, so they are the ones a net of one more class builds differently."""
        mine = build_model(cfg).state_dict()
        wider = build_model(cfg.replace(classes=cfg.classes + self.config.classes[:1])).state_dict()
        return {k: v for k, v in self.state.items() if mine[k].shape == wider[k].shape}


def backbone_config(cfg: RunConfig) -> RunConfig:
    """The pretraining run of ``cfg``: its net, tactic and recipe on every other class, for ``pretrain_epochs``."""
    others = tuple(i for i in range(100) if i not in cfg.classes)
    return cfg.replace(classes=others, epochs=cfg.pretrain_epochs, pretrain_epochs=0, seed=BACKBONE_SEED,
                       val_fraction=VAL_FRACTION, split_seed=0, select="last", tta_flip=False, plot_every=None)


def check_pretraining_data(configs, data_dir=None) -> None:
    """Before any of ``configs`` trains: a pretrained run needs the full CIFAR-100, which the shipped sample is not."""
    for cfg in {c.classes: c for c in configs if c.pretrain_epochs}.values():    # each class selection once
        if data_source(cfg.classes, data_dir) == "sample":
            raise PretrainError(
                f"{cfg.net_name} pretrains on the {100 - len(cfg.classes)} classes you did not pick, and only the "
                f"sample shipped with cifarlab (classes 0, 55, 58) is here: get the full CIFAR-100 first with "
                f"python -m cifarlab download (169 MB; or point $CIFARLAB_DATA at a folder holding it)")


def get_backbone(cfg: RunConfig, out, data_dir=None, view=None, say=print) -> Backbone:
    """The backbone ``cfg`` starts from: the one under ``out/backbones`` when it was made before, else made now
    (trained with :func:`cifarlab.engine.train`, shown by ``view`` like any run) and kept there."""
    pre = backbone_config(cfg)
    name = f"{pre.model}_{pre.pooling}_without-{'-'.join(map(str, cfg.classes[:8]))}_{pre.run_id[:8]}"
    folder = Path(out) / "backbones" / name
    if (folder / "backbone.json").is_file():
        info = read_json(folder / "backbone.json", "pretrained backbone", PretrainError)
        if info.get("config") != pre.to_dict():
            raise PretrainError(f"{folder} holds another backbone than its name says (edited or copied by hand); "
                                f"delete it and run again to pretrain afresh")
        return Backbone(pre, load_state_dict_safely(folder / "backbone.pt"), info)
    check_pretraining_data([cfg], data_dir)
    data = load_subset(pre.classes, data_dir=data_dir, val_fraction=VAL_FRACTION, verbose=False)
    data = dataclasses.replace(data, x_test=data.x_test[:0], y_test=data.y_test[:0])   # never a test image
    say(f"pretraining {pre.model}/{pre.pooling} on {len(data.y_train)} train images of the {len(pre.classes)} "
        f"classes you did not pick, {pre.epochs} epochs (once: every run asking for it reuses it)")
    if view is not None:    # the run's view, showing the pretraining under its own title
        title = getattr(view, "title", None)       # given back afterwards, as it was
        view.title = f"backbone {pre.model}/{pre.pooling} on the {len(pre.classes)} other classes"
    try:
        result = train(pre, data, view)
    finally:
        if view is not None:
            view.title = title
    h = result.history[-1]
    info = {"backbone_id": pre.run_id, "folder": str(Path("backbones") / folder.name),
            "without_classes": list(cfg.classes), "train_images": len(data.y_train), "epochs": result.epochs_run,
            "seconds": result.train_seconds, "val_acc": h["val_acc"], "device": result.device,
            "precision": pre.precision, "config": pre.to_dict(), "history": result.history}
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    with building(folder.parent, folder.name) as tmp:
        buf = io.BytesIO()   # as records do: Python's writer says why a write failed (a full disk)
        torch.save(state, buf)
        (tmp / "backbone.pt").write_bytes(buf.getvalue())
        write_json(tmp / "backbone.json", info)   # last: its presence marks a finished backbone
        publish_dir(tmp, folder, BACKBONE)
    say(f"pretrained in {result.train_seconds:.0f} s: {h['val_acc']:.3f} accuracy on {len(data.y_val)} held-out "
        f"images of those classes; kept in {folder}")
    return Backbone(pre, state, info)


def summary(info: dict) -> dict:
    """What a run's record says of its backbone (its history stays in backbone.json)."""
    return {k: v for k, v in info.items() if k not in ("config", "history")}


__all__ = ["Backbone", "PretrainError", "get_backbone", "backbone_config", "check_pretraining_data"]
