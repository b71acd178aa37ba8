"""Saving the chosen model, loading it back safely, and ONNX that works on current torch.

The ``best/`` folder is self-contained - everything the reload step (a fresh kernel) needs; its files are
listed in docs/records.md (and in :data:`BEST_FILES`).

ONNX on torch >= 2.9: the exporter is dynamo-based. Opset 9 is refused and down-conversion
is unreliable, so we export at opset 18; the batch axis is dynamic only with
``dynamic_shapes``; ``external_data=False`` keeps the weights inside the one file (no
``.onnx.data`` side file); ``onnxscript`` must be installed (a dependency of this package).
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import ConfigError, RunConfig
from .errors import CifarlabError
from .files import (
    Owned,
    building,
    check_replaceable,
    check_writable_dir,
    publish_dir,
    read_json,
    read_npz,
    user_path,
    write_json,
)
from .models import load_model

ONNX_OPSET = 18
ONNX_INPUT, ONNX_OUTPUT = "pixels", "logits"
# float32 logits of the same graph computed by two runtimes differ by rounding only.
ONNX_ATOL, ONNX_RTOL = 1e-4, 1e-4
# A reload on another machine (other CPU kernels, or the GPU that trained) vs the recorded CPU logits
# (docs/statistics.md, "Reload anywhere").
RELOAD_ATOL = 1e-3
BEST_MARKER = ".cifarlab-best"
BEST_FILES = frozenset({BEST_MARKER, "model.pt", "config.json", "classes.json", "recorded_metrics.json",
                        "test_predictions.npz", "selection.json", "model.onnx", "model.pt2", "net.py"})
BEST = Owned((BEST_MARKER,), BEST_FILES, "--best", "best")


class ExportError(CifarlabError, RuntimeError):
    """An export or a reload that did not check out (a failed run, not a bad option)."""

    exit_code = 1


def onnxruntime():
    """onnxruntime, imported here only - with its telemetry off. On import it writes a device id and queues
    telemetry events under ~/.cache/Microsoft/DeveloperTools unless ``ORT_DISABLE_TELEMETRY`` is set (read
    by the library at import; checked with onnxruntime 1.32); ``disable_telemetry_events()`` stops the events
    of one imported before us. torch's exporter may import onnxruntime too, so the variable is set at the
    top of this module, before any export."""
    import onnxruntime as ort
    ort.disable_telemetry_events()
    return ort


os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def export_onnx(model: nn.Module, path) -> Path:
    """Export to a single ONNX file with a dynamic batch axis: uint8 [N, 32, 32, 3] -> logits [N, k]. Written in
    place: its callers write into a staging or temporary folder."""
    path = Path(path)
    model = model.eval().cpu()
    example = torch.zeros(2, 32, 32, 3, dtype=torch.uint8)
    with contextlib.redirect_stdout(io.StringIO()):   # the exporter's progress lines
        torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=ONNX_OPSET, external_data=False,
                          input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                          dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    return path


def check_onnx(path, model: nn.Module, images: torch.Tensor) -> dict:
    """``onnx.checker`` plus onnxruntime vs PyTorch on real images (at least 7) at batch sizes 1 and 7.

    Returns the largest absolute difference per batch size; raises ExportError past tolerance."""
    import onnx

    ort = onnxruntime()
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if dims[0].dim_value != 0 or [d.dim_value for d in dims[1:]] != [32, 32, 3]:
        raise ExportError(f"{path}: input shape is {[d.dim_param or d.dim_value for d in dims]}, "
                          f"expected [batch, 32, 32, 3]")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = model.eval().cpu()
    out = {"opset": opset, "max_abs_diff": {}, "atol": ONNX_ATOL, "rtol": ONNX_RTOL, "agree_top1": True}
    for b in (1, 7):
        x = images[:b].cpu()
        got = sess.run([ONNX_OUTPUT], {ONNX_INPUT: x.numpy()})[0]
        with torch.inference_mode():
            want = model(x).numpy()
        diff = float(np.abs(got - want).max())
        out["max_abs_diff"][str(b)] = diff
        out["agree_top1"] &= bool((got.argmax(1) == want.argmax(1)).all())
        if not np.allclose(got, want, atol=ONNX_ATOL, rtol=ONNX_RTOL):
            raise ExportError(f"onnxruntime and PyTorch disagree at batch size {b}: max |diff| {diff:.3g} "
                              f"> atol {ONNX_ATOL} + rtol {ONNX_RTOL}")
    return out


def onnx_predict(path, images: np.ndarray) -> np.ndarray:
    """Logits from an ONNX file (or an open onnxruntime session) for uint8 NHWC images."""
    ort = onnxruntime()
    sess = path
    if not isinstance(path, ort.InferenceSession):
        try:
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:   # onnxruntime's own errors (Fail, InvalidProtobuf, NoSuchFile) share no base class
            raise ExportError(f"{path} cannot be loaded by onnxruntime ({str(e).splitlines()[0][:200]}): it is "
                              f"missing or damaged; save best/ again (python -m cifarlab compare --runs RUNS "
                              f"--best FOLDER, or notebook 02)") from None
    images = np.asarray(images)
    outs = [sess.run([ONNX_OUTPUT], {ONNX_INPUT: np.ascontiguousarray(images[i:i + 1024])})[0]
            for i in range(0, len(images), 1024)]
    return np.concatenate(outs)


def onnx_session(model: nn.Module):
    """``model`` exported to ONNX and opened in onnxruntime on the CPU - what the measures of a run use.

    The export here uses torch's TorchScript-based exporter when this torch has it (0.1 s, vs 1.5-3.5 s
    for the dynamo exporter that writes best/model.onnx: the same operators, and as fast), so measuring
    every run costs little; the dynamo exporter otherwise."""
    import tempfile
    import warnings

    ort = onnxruntime()
    model = copy.deepcopy(model).eval().cpu()
    with tempfile.TemporaryDirectory(prefix="cifarlab-measure-") as d:
        path = Path(d) / "m.onnx"
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (torch.zeros(2, 32, 32, 3, dtype=torch.uint8),), str(path), dynamo=False,
                                  opset_version=ONNX_OPSET, input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                                  dynamic_axes={ONNX_INPUT: {0: "batch"}})
        except Exception:  # no TorchScript exporter in this torch: the one best/ uses
            export_onnx(model, path)
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnx_latency(sess) -> dict:
    """Median inference latency in onnxruntime on this machine's CPU: ms per image at batch 1, and ms
    per 256-image batch. Warm-up runs first, then the median of the repeats."""
    import time

    from .hardware import cpu_name

    ort = onnxruntime()
    x = np.random.default_rng(0).integers(0, 256, (256, 32, 32, 3), dtype=np.uint8)
    out = {}
    for key, batch, repeats in (("latency_ms_b1", 1, 50), ("latency_ms_b256", 256, 5)):
        feed = {ONNX_INPUT: x[:batch]}
        for _ in range(3):
            sess.run([ONNX_OUTPUT], feed)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run([ONNX_OUTPUT], feed)
            times.append(time.perf_counter() - t0)
        out[key] = 1000 * float(np.median(times))
    out["latency_machine"] = f"{cpu_name()}, onnxruntime {ort.__version__}, {os.cpu_count()} CPUs"
    return out


def check_best_target(folder) -> Path:
    """Before anything is compared or written: ``folder`` may be new, empty, or a previous best/ folder
    (its marker present, nothing foreign in it); anything else is refused (:func:`check_replaceable`)."""
    folder = user_path(folder, "--best")
    check_writable_dir(folder.parent, "--best")
    check_replaceable(folder, BEST)
    return folder


def save_best(record, folder, selection: dict, check_images: torch.Tensor | None) -> dict:
    """Copy the chosen run into ``folder`` (state_dict, config, class names, recorded metrics and
    predictions), export ONNX there and check it. Built beside and moved into place at once;
    ``folder`` is replaced only when it is a previous best/ folder (:func:`check_best_target`)."""
    folder = check_best_target(folder)
    with building(folder.parent, folder.name) as tmp:
        shutil.copy2(record.path / "model.pt", tmp / "model.pt")
        shutil.copy2(record.path / "config.json", tmp / "config.json")
        shutil.copy2(record.path / "test_predictions.npz", tmp / "test_predictions.npz")
        for name in ("model.pt2", "net.py") if record.config.net else ():   # your own net: reloads without its class
            shutil.copy2(record.path / name, tmp / name)
        write_json(tmp / "recorded_metrics.json", record.metrics)
        write_json(tmp / "classes.json", record.metrics["classes"])
        model = record.load_model("cpu")
        export_onnx(model, tmp / "model.onnx")
        if check_images is None:
            check_images = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8,
                                         generator=torch.Generator().manual_seed(0))
        check = check_onnx(tmp / "model.onnx", model, check_images)
        write_json(tmp / "selection.json", {**selection, "run": str(record.path), "onnx_check": check})
        from . import __version__
        write_json(tmp / BEST_MARKER, {"written_by": f"cifarlab {__version__}", "run": str(record.path)})
        publish_dir(tmp, folder, BEST)
    return check


def load_best(folder, device="cpu") -> tuple[nn.Module, RunConfig, dict]:
    """Rebuild the chosen model from ``best/`` alone: (model in eval mode, config, classes)."""
    folder = user_path(folder, "BEST")
    if not (folder / "config.json").is_file():
        raise ExportError(f"{folder} has no config.json, so it is not a best/ folder: run the comparison notebook "
                          f"(02_compare.ipynb) or `python -m cifarlab compare --runs RUNS --best {folder}` first")
    try:
        config = RunConfig.from_dict(read_json(folder / "config.json", "best folder", ExportError))
    except (ConfigError, TypeError) as e:
        raise ExportError(f"{folder / 'config.json'} does not hold a valid config ({e}); save best/ again with "
                          f"`python -m cifarlab compare --runs RUNS --best {folder}`") from None
    own = set() if config.net else {"model.pt2", "net.py"}      # your own net reloads from model.pt2
    missing = sorted(f for f in BEST_FILES - {"selection.json", BEST_MARKER} - own if not (folder / f).is_file())
    if missing:
        raise ExportError(f"{folder} is an incomplete best/ folder ({', '.join(missing)} missing): save it again "
                          f"(python -m cifarlab compare --runs RUNS --best {folder}, or notebook 02)")
    classes = read_json(folder / "classes.json", "best folder", ExportError)
    return load_model(config, folder / "model.pt", device), config, classes


def verify_reload(folder, x_test: torch.Tensor, y_test: torch.Tensor, device="cpu", expected_classes=None) -> dict:
    """Recompute the test predictions from ``best/`` alone, with PyTorch and with onnxruntime, and
    compare them with the recorded ones (within :data:`RELOAD_ATOL`). Raises
    ExportError when they do not match, or when ``best/`` holds another experiment's model."""
    folder = user_path(folder, "BEST")
    model, config, classes = load_best(folder, device)
    if expected_classes is not None and tuple(expected_classes) != tuple(config.classes):
        raise ExportError(f"{folder} holds a model of classes {list(config.classes)} ({', '.join(classes['names'])}), "
                          f"but this reload expects classes {list(expected_classes)}: pass the best/ folder of that "
                          f"experiment (make run-all writes one per experiment: OUT/<experiment>/best)")
    recorded = read_json(folder / "recorded_metrics.json", "best folder", ExportError)
    z = read_npz(folder / "test_predictions.npz", ExportError, f"Save best/ again (python -m cifarlab compare "
                                                                f"--runs RUNS --best {folder}, or notebook 02)")
    try:
        rec_logits, rec_pred, rec_true = z["logits"], z["pred"], z["true"]
    except KeyError as e:
        raise ExportError(f"{folder / 'test_predictions.npz'} is damaged ({e} missing): save best/ again") from None
    from .engine import predict_logits
    torch_logits = predict_logits(model, x_test.to(device)).cpu().numpy()
    onnx_logits = onnx_predict(folder / "model.onnx", x_test.cpu().numpy())
    y = y_test.cpu().numpy()
    if len(y) != len(rec_true):
        raise ExportError(f"reloading {folder}: the test set here has {len(y)} images, the recorded one "
                          f"{len(rec_true)} - other classes or other data than the run was scored on")
    top2 = np.sort(rec_logits, 1)[:, -2:]   # a config has at least 2 classes
    near_tie = (top2[:, 1] - top2[:, 0]) < 2 * RELOAD_ATOL   # rounding may flip such a prediction either way
    out = {
        "n_test": int(len(y)),
        "trained_on": recorded.get("device", "?"), "reloaded_on": str(device),
        "labels_match": bool(np.array_equal(rec_true, y)),
        "near_ties": int(near_tie.sum()),
        "torch_pred_match": int((torch_logits.argmax(1) == rec_pred).sum()),
        "onnx_pred_match": int((onnx_logits.argmax(1) == rec_pred).sum()),
        "torch_max_abs_diff": float(np.abs(torch_logits - rec_logits).max()),
        "onnx_max_abs_diff": float(np.abs(onnx_logits - rec_logits).max()),
        "tolerance": RELOAD_ATOL,
        "recorded_test_acc": recorded["test_acc"],
        "torch_test_acc": float((torch_logits.argmax(1) == y).mean()),
        "onnx_test_acc": float((onnx_logits.argmax(1) == y).mean()),
        "pred": torch_logits.argmax(1),
    }
    problems = []
    if not out["labels_match"]:
        problems.append("the test labels differ from the recorded ones (other classes or data?)")
    for who, logits in (("torch", torch_logits), ("onnx", onnx_logits)):
        flipped = (logits.argmax(1) != rec_pred) & ~near_tie
        if flipped.any():
            problems.append(f"{who}: {int(flipped.sum())} predictions differ from the recorded ones")
        if out[f"{who}_max_abs_diff"] > RELOAD_ATOL:
            problems.append(f"{who}: logits differ from the recorded ones by up to {out[f'{who}_max_abs_diff']:.3g} "
                            f"(tolerance {RELOAD_ATOL})")
    if problems:
        raise ExportError(f"reloading {folder} did not reproduce the recorded run: " + "; ".join(problems))
    return out
