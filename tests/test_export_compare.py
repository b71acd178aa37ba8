import json

import numpy as np
import onnx
import pytest
import torch

from cifarlab.comparison import CHOICE_RULE, compare, compare_and_save
from cifarlab.config import make_config
from cifarlab.experiment import run
from cifarlab.export import RELOAD_ATOL, ExportError, check_onnx, export_onnx, load_best, onnx_predict, verify_reload
from cifarlab.models import ModelFileError, build_model, load_model, load_state_dict_safely
from cifarlab.records import load_record


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
    check = check_onnx(path, model, sample_subset.x_test[:8])
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
    with pytest.raises(ModelFileError, match="weights_only=True"):
        load_state_dict_safely(tmp_path / "whole.pt")
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    assert set(load_state_dict_safely(tmp_path / "sd.pt")) == set(model.state_dict())
    with pytest.raises(ModelFileError, match="does not exist"):
        load_state_dict_safely(tmp_path / "missing.pt")
    # load_model (what best/ and records load through) keeps those reasons: not "from different runs"
    cfg = make_config("template")
    with pytest.raises(ModelFileError, match="weights_only=True"):
        load_model(cfg, tmp_path / "whole.pt")
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(cfg, tmp_path / "missing.pt")
    with pytest.raises(ModelFileError, match="come from different runs"):
        load_model(make_config("template", pooling="stride"), tmp_path / "sd.pt")
    assert load_model(cfg, tmp_path / "sd.pt").training is False


def test_comparison_of_real_runs(runs):
    c = compare(runs)
    assert [(g.model, g.pooling, g.n) for g in c.groups] == [("improved", "stride", 2), ("improved", "avg", 2)]
    assert "improved/stride" in c.tables() and "±" in c.tables() and "val acc" in c.tables()
    # the means in the table are the means of the records' own numbers
    stride = c.groups[0]
    accs = [load_record(r.path).metrics["test_acc"] for r in stride.records]
    assert f"{np.mean(accs):.4f} ± {np.std(accs, ddof=1):.4f}" in c.tables()
    # the choice is the rule's, on validation: the best mean, or a faster one tied with it on paired data
    best = max(c.groups, key=lambda g: g.mean("val_acc"))
    assert c.choice.group is best or c.choice.group in c.choice.tied and best in c.choice.tied
    assert c.choice.record.metrics["val_acc"] == max(r.metrics["val_acc"] for r in c.choice.group.records)
    assert "interval" in c.verdicts and "paired test" in c.decision()
    assert "validation" in CHOICE_RULE and "test set is reported, never used to choose" in CHOICE_RULE


def test_best_folder_reloads_and_reproduces(runs, sample_subset, tmp_path):
    best = tmp_path / "best"
    c = compare_and_save(runs, best)
    assert {".cifarlab-best", "model.pt", "config.json", "classes.json", "model.onnx", "recorded_metrics.json",
            "test_predictions.npz", "selection.json"} == {p.name for p in best.iterdir()}
    model, cfg, classes = load_best(best)
    assert cfg == c.choice.record.config and classes["names"] == ["apple", "otter", "pickup_truck"]
    check = verify_reload(best, sample_subset.x_test, sample_subset.y_test, expected_classes=(0, 55, 58))
    assert check["torch_pred_match"] == check["onnx_pred_match"] == 300
    # the reloaded model's accuracy, computed here from the labels, is the recorded one
    assert check["torch_test_acc"] == pytest.approx(c.choice.record.metrics["test_acc"])
    assert check["trained_on"] == "cpu" and check["reloaded_on"] == "cpu"
    sel = json.loads((best / "selection.json").read_text())
    assert sel["onnx_check"]["opset"] >= 18 and sel["rule"] == CHOICE_RULE
    # saving again replaces a previous best folder (it is ours)
    compare_and_save(runs, best)
    # a wrong test set is caught, not waved through
    with pytest.raises(ExportError, match="did not reproduce"):
        verify_reload(best, sample_subset.x_test.flip(2), sample_subset.y_test)
    # another experiment's best/ is refused by name
    with pytest.raises(ExportError, match="holds a model of classes .0, 55, 58.*expects classes .8, 13"):
        verify_reload(best, sample_subset.x_test, sample_subset.y_test, expected_classes=(8, 13))


def test_reload_on_another_device_within_tolerance(runs, sample_subset, tmp_path):
    """A model trained elsewhere (a GPU, another CPU's kernels) reloads here: the recorded logits may differ
    from ours by float rounding. Within the tolerance it verifies; a real difference does not."""
    best = tmp_path / "best"
    compare_and_save(runs, best)
    path = best / "test_predictions.npz"
    with np.load(path) as z:
        rec = {k: z[k] for k in z.files}
    noise = np.random.default_rng(0).uniform(-RELOAD_ATOL / 4, RELOAD_ATOL / 4, rec["logits"].shape)
    np.savez(path, **{**rec, "logits": (rec["logits"] + noise).astype(np.float32)})
    check = verify_reload(best, sample_subset.x_test, sample_subset.y_test)
    assert check["torch_pred_match"] + check["near_ties"] >= 300
    np.savez(path, **{**rec, "logits": rec["logits"] + 0.01})
    with pytest.raises(ExportError, match="logits differ from the recorded ones"):
        verify_reload(best, sample_subset.x_test, sample_subset.y_test)
