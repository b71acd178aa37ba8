"""Pretraining on the classes you did not pick (issue 26): the backbone is made once, from other classes' train
images only, reused by every seed, new for another excluded set; the record says which; without the full data
a pretrained run stops before anything trains, in one line."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_NET, fake_record

from cifarlab import pretrain
from cifarlab.comparison import compare
from cifarlab.config import ConfigError, RunConfig, make_config
from cifarlab.data import read_split
from cifarlab.engine import train
from cifarlab.experiment import run
from cifarlab.hardware import resolve_config

CHOSEN = (0, 55, 58)
SLICE = CHOSEN + (1, 2, 3)   # a CIFAR-100 whose "other classes" are 1, 2, 3: pretraining takes seconds


@pytest.fixture(scope="module")
def slice_data_dir(full_data_dir, tmp_path_factory):
    """A data folder in the official layout (real pixels, real pickles) holding only the classes of SLICE."""
    folder = tmp_path_factory.mktemp("slice") / "cifar-100-python"
    folder.mkdir()
    for split in ("train", "test"):
        x, y = read_split(full_data_dir / "cifar-100-python", split)
        keep = np.isin(y, SLICE)
        data = np.ascontiguousarray(x[keep].transpose(0, 3, 1, 2).reshape(int(keep.sum()), -1))
        with open(folder / split, "wb") as f:
            pickle.dump({"data": data, "fine_labels": y[keep].tolist()}, f)
    return folder.parent


def tiny(**kw) -> RunConfig:
    """A pretrained run of two steps (and two steps of pretraining: a dry run), on every image all the same."""
    return make_config("improved+pretrained", **{"classes": CHOSEN, "pretrain_epochs": 1, "hidden_size": 4,
                                                 "pooling": "max", "dry_run": True, **kw})


def test_the_backbone_is_made_once_from_other_classes_only_and_the_record_says_which(slice_data_dir, tmp_path,
                                                                                   monkeypatch, capsys):
    seen = []
    real = pretrain.train

    def spy(cfg, data, view=None, init=None):
        seen.append((cfg, data))
        return real(cfg, data, view, init)
    monkeypatch.setattr(pretrain, "train", spy)
    out = tmp_path / "runs"

    first = run(tiny(seed=0), out, data_dir=slice_data_dir, live="quiet")
    shown = capsys.readouterr().out    # the view shows the pretraining under its own title, then the run's
    assert "training backbone improved/max on the 97 other classes" in shown
    assert "training improved+pretrained net, max pooling, seed 0" in shown
    (pre, data), = seen
    fine_ids = np.array(pre.classes)
    for labels in (data.y_train, data.y_val):          # by label: never an image of a chosen class
        assert set(fine_ids[labels.numpy()]) == {1, 2, 3}
    assert len(data.y_train) + len(data.y_val) == 3 * 500 and len(data.y_test) == 0   # all their train, no test
    info = first.metrics["backbone"]
    assert info["backbone_id"] == pretrain.backbone_config(first.config).run_id
    assert info["without_classes"] == list(CHOSEN) and info["epochs"] == 1
    folder = out / info["folder"]
    saved = json.loads((folder / "backbone.json").read_text())
    assert saved["config"]["classes"] == [c for c in range(100) if c not in CHOSEN]
    assert saved["config"]["seed"] == pretrain.BACKBONE_SEED and len(saved["history"]) == 1
    mtime = (folder / "backbone.pt").stat().st_mtime_ns

    second = run(tiny(seed=1), out, data_dir=slice_data_dir, live="none")   # another seed: the same backbone
    assert len(seen) == 1, "the second seed pretrained again"
    assert (folder / "backbone.pt").stat().st_mtime_ns == mtime
    assert second.metrics["backbone"]["backbone_id"] == info["backbone_id"]

    other = run(tiny(classes=(0, 55, 1)), out, data_dir=slice_data_dir, live="none")   # another excluded set
    assert len(seen) == 2 and other.metrics["backbone"]["backbone_id"] != info["backbone_id"]
    assert set(np.array(seen[1][0].classes)[seen[1][1].y_train.numpy()]) == {58, 2, 3}
    assert len(list((out / "backbones").iterdir())) == 2

    # the fine-tuning starts from the backbone: at a vanishing learning rate its conv weights stay the backbone's
    backbone = pretrain.get_backbone(first.config, out)
    cfg = resolve_config(first.config.replace(lr=1e-12, weight_decay=0.0))[0]
    from cifarlab.data import load_subset
    result = train(cfg, load_subset(CHOSEN, data_dir=slice_data_dir, verbose=False),
                   init=backbone.weights_for(cfg))
    assert torch.allclose(result.model.features[0].weight, backbone.state["features.0.weight"], atol=1e-6)
    assert set(backbone.state) - set(backbone.weights_for(cfg)) == {"classifier.weight", "classifier.bias"}


def test_a_hand_edited_backbone_is_refused(slice_data_dir, tmp_path):
    out = tmp_path / "runs"
    rec = run(tiny(), out, data_dir=slice_data_dir, live="none")
    meta = out / rec.metrics["backbone"]["folder"] / "backbone.json"
    info = json.loads(meta.read_text())
    info["config"]["lr"] = 0.5
    meta.write_text(json.dumps(info))
    with pytest.raises(pretrain.PretrainError, match="another backbone than its name says"):
        run(tiny(seed=1), out, data_dir=slice_data_dir, live="none")


def test_own_net_keeps_everything_but_its_classifier(tmp_path, monkeypatch):
    (tmp_path / "tinynet.py").write_text(TINY_NET)
    cfg = make_config("improved", model=f"{tmp_path / 'tinynet.py'}:TinyNet", pooling="max", pretrain_epochs=1)
    pre = pretrain.backbone_config(cfg)
    from cifarlab.models import build_model
    backbone = pretrain.Backbone(pre, build_model(pre).state_dict(), {})
    kept = backbone.weights_for(cfg)
    assert set(backbone.state) - set(kept) == {"net.body.5.weight", "net.body.5.bias"}   # its Linear(8, k)


def test_sample_only_data_is_one_line_before_anything_trains(tmp_path):
    """Only the shipped sample here (the autouse fixture's empty data folder): rc 2, one line, nothing written."""
    env = {**os.environ, "CIFARLAB_DATA": str(tmp_path / "empty")}
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "cifarlab", "train", "--preset", "improved+pretrained", "--out",
                        str(tmp_path / "runs")], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "python -m cifarlab download" in lines[0] and "97 classes" in lines[0], r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_presets_and_identity():
    cfg = make_config("improved+pretrained")
    assert cfg.pretrain_epochs > 0 and cfg.net_name == "improved+pretrained" and cfg.model == "improved"
    assert cfg.run_name.startswith("improved+pretrained_") and cfg.configuration_label.startswith(
        "improved+pretrained/max (improved+pretrained preset)")
    scratch = make_config("improved")
    # a from-scratch config does not carry the later field: every earlier record keeps its identity
    assert "pretrain_epochs" not in scratch.to_json() and f'"pretrain_epochs": {cfg.pretrain_epochs}' in cfg.to_json()
    assert RunConfig.from_dict(json.loads(scratch.to_json())).run_id == scratch.run_id
    with pytest.raises(ConfigError, match="all 100 classes"):
        make_config("improved+pretrained", classes=list(range(100)))
    with pytest.raises(ConfigError, match="pretrain_epochs=-1"):
        make_config("improved", pretrain_epochs=-1)


def test_the_comparison_pairs_pretrained_with_the_same_net_from_scratch(tmp_path):
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        for cfg, p in ((make_config("improved", pooling="max", seed=seed), 0.7),
                       (make_config("improved+pretrained", pooling="max", seed=seed), 0.95),
                       (make_config("improved", pooling="avg", seed=seed), 0.7)):
            fake_record(tmp_path, cfg, rng.random(60) < p, rng.random(300) < p)
    c = compare(tmp_path)
    assert [g.label for g in c.groups] == ["improved/max", "improved/avg", "improved+pretrained/max"]
    assert "improved+pretrained/max vs improved/max" in c.verdicts
    assert "improved+pretrained/max vs improved/avg" not in c.verdicts   # the same net, the same tactic only


def test_a_sweep_makes_each_backbone_once_and_ships_it_to_its_runs(slice_data_dir, tmp_path):
    from cifarlab.sweep import make_sweep, run_sweep
    plan = make_sweep([CHOSEN], ["improved", "improved+pretrained"], ["max"], 2, dry_run=True,
                      overrides={"hidden_size": 4})
    assert [c.net_name for c in plan.configs] == ["improved"] * 2 + ["improved+pretrained"] * 2
    log = []
    result = run_sweep(plan, tmp_path / "sweep", data_dir=slice_data_dir, progress=False, log=log.append)
    assert not result.failed and len(result.records) == 4
    made = [line for line in log if line.startswith("pretraining ")]
    assert len(made) == 1, log                        # one backbone for both seeds, made by the sweep first
    ids = {r.metrics.get("backbone", {}).get("backbone_id") for r in result.records.values()}
    assert ids == {None, pretrain.backbone_config(plan.configs[-1]).run_id}
    assert len(list((tmp_path / "sweep" / "backbones").iterdir())) == 1


def test_make_run_all_says_what_pretraining_needs_before_anything_runs(tmp_path):
    env = {**os.environ, "CIFARLAB_DATA": str(tmp_path / "empty")}
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "scripts/run_all.py", "--models", "improved improved+pretrained", "--out",
                        str(tmp_path / "out"), "--kernel", "python3"], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "python -m cifarlab download" in r.stderr, r.stderr
    assert not list((tmp_path / "out").glob("*/notebooks/*.ipynb")), "a notebook ran before the check"


@pytest.mark.cluster
def test_on_ray_the_backbone_is_made_by_the_driver_and_shipped_to_the_workers(slice_data_dir, tmp_path):
    import ray

    from cifarlab.sweep import make_sweep, run_sweep
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        plan = make_sweep([CHOSEN], ["improved+pretrained"], ["max"], 2, dry_run=True, overrides={"hidden_size": 4})
        log = []
        result = run_sweep(plan, tmp_path / "sweep", engine="ray", cpus_per_run=1, data_dir=slice_data_dir,
                           progress=False, log=log.append)
    finally:
        ray.shutdown()
    assert not result.failed and len(result.records) == 2, result.failed
    assert sum(line.startswith("pretraining ") for line in log) == 1
    assert all(info["pid"] != os.getpid() for info in result.runs.values())         # trained in Ray workers
    ids = {r.metrics["backbone"]["backbone_id"] for r in result.records.values()}
    assert ids == {pretrain.backbone_config(plan.configs[0]).run_id}
