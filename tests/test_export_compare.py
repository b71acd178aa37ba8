import json

import numpy as np
import onnx
import pytest
import torch

from cifarlab.comparison import CHOICE_RULE, choose, group_records, table
from cifarlab.config import make_config
from cifarlab.experiment import run
from cifarlab.export import (ExportError, check_onnx, export_onnx, load_best, load_state_dict_safely, onnx_predict,
                             save_best, verify_reload)
from cifarlab.models import build_model
from cifarlab.records import find_records


@pytest.fixture(scope="module")
def runs(sample_subset, tmp_path_factory):
    """Two tactics x two seeds of a small improved net: real records to compare."""
    out = tmp_path_factory.mktemp("runs")
    for pooling in ("stride", "avg"):
        for seed in (0, 1):
            run(make_config("improved", hidden_size=8, epochs=3, pooling=pooling, seed=seed, device="cpu"),
                out=out, subset=sample_subset, live="none")
    return out


def test_onnx_export_is_one_file_opset18_dynamic_batch(tmp_path, sample_subset):
    model = build_model(make_config("template", pooling="max")).eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cifarlab-data") == ["m.onnx"]  # no .onnx.data
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 18
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [32, 32, 3]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    check = check_onnx(path, model, sample_subset.x_test[:8], batch_sizes=(1, 7))
    assert set(check["max_abs_diff"]) == {"1", "7"} and check["agree_top1"]
    logits = onnx_predict(path, sample_subset.x_test.numpy()[:50])
    with torch.inference_mode():
        assert np.allclose(logits, model(sample_subset.x_test[:50]).numpy(), atol=1e-4)


def test_check_onnx_catches_a_different_model(tmp_path, sample_subset):
    a = build_model(make_config("template", pooling="max", seed=0)).eval()
    torch.manual_seed(1)
    b = build_model(make_config("template", pooling="max")).eval()
    path = export_onnx(a, tmp_path / "a.onnx")
    with pytest.raises(ExportError, match="disagree"):
        check_onnx(path, b, sample_subset.x_test[:8])


def test_safe_load_rejects_a_pickled_model(tmp_path):
    model = build_model(make_config("template"))
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(ExportError, match="weights_only=True"):
        load_state_dict_safely(tmp_path / "whole.pt")
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    assert set(load_state_dict_safely(tmp_path / "sd.pt")) == set(model.state_dict())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_state_dict_safely(tmp_path / "missing.pt")


def test_comparison_table_and_choice(runs):
    groups = group_records(find_records(runs))
    assert [(g.model, g.pooling, g.n) for g in groups] == [("improved", "stride", 2), ("improved", "avg", 2)]
    text = table(groups)
    assert "improved/stride" in text and "±" in text and "val acc" in text
    choice = choose(groups)
    best_mean = max(g.mean("val_acc") for g in groups)
    # the rule: within one std of the best mean val acc, the fastest wins
    assert choice.group in choice.tied
    assert all(best_mean - g.mean("val_acc") <= max(g2.std("val_acc") for g2 in groups if g2.mean("val_acc") == best_mean)
               for g in choice.tied)
    assert choice.group.mean("train_seconds") == min(g.mean("train_seconds") for g in choice.tied)
    assert choice.record.metrics["val_acc"] == max(r.metrics["val_acc"] for r in choice.group.records)
    assert "distinguishable" in choice.distinguishable
    assert "validation" in CHOICE_RULE and "test set is reported, never used to choose" in CHOICE_RULE


def test_best_folder_reloads_and_reproduces(runs, sample_subset, tmp_path):
    choice = choose(group_records(find_records(runs)))
    best = tmp_path / "best"
    save_best(choice.record, best, {"rule": CHOICE_RULE}, sample_subset.x_test[:8])
    assert {"model.pt", "config.json", "classes.json", "model.onnx", "recorded_metrics.json",
            "test_predictions.npz", "selection.json"} == {p.name for p in best.iterdir()}
    model, cfg, classes = load_best(best)
    assert cfg == choice.record.config and classes["names"] == ["apple", "otter", "pickup_truck"]
    check = verify_reload(best, sample_subset.x_test, sample_subset.y_test)
    assert check["torch_pred_match"] == check["onnx_pred_match"] == 300
    assert check["torch_test_acc"] == pytest.approx(choice.record.metrics["test_acc"])
    sel = json.loads((best / "selection.json").read_text())
    assert sel["onnx_check"]["opset"] >= 18 and sel["rule"] == CHOICE_RULE
    # a wrong test set is caught, not waved through
    with pytest.raises(ExportError, match="did not reproduce"):
        verify_reload(best, sample_subset.x_test.flip(2), sample_subset.y_test)
