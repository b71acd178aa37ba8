"""Your own net (issue 23): a student's nn.Module trains, records, compares, exports and reloads like the
shipped nets; its identity includes the net; every mistake in it is one line (rc 2) before anything trains,
with the student's own frames above it."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cifarlab.config import PRESETS, RunConfig, make_config, notebook_config
from cifarlab.experiment import run
from cifarlab.models import build_model
from cifarlab.ownnet import NetError, class_source

ROOT = Path(__file__).resolve().parent.parent

NET = '''
import torch
from torch import nn


class SmallNet(nn.Module):
    """Two conv blocks; the pooling tactic comes from cifarlab."""

    def __init__(self, num_classes, pooling="max", width=8):
        super().__init__()
        down = {"stride": lambda c: nn.Conv2d(c, c, 3, stride=2, padding=1), "max": lambda c: nn.MaxPool2d(2),
                "avg": lambda c: nn.AvgPool2d(2)}[pooling]
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), down(width),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))
'''


def _write(folder: Path, text: str, name="net.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "cifarlab", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_a_file_net_trains_records_and_reloads_without_its_class(tmp_path, sample_subset):
    """From the command line: train, compare (paired against the template), save best/, then reload best/ in
    a fresh process that never imports the net's file: PyTorch (torch.export program) and ONNX reproduce
    the recorded predictions."""
    net = _write(tmp_path, NET)
    runs, best = tmp_path / "runs", tmp_path / "best"
    r = _cli("train", "--preset", "improved", "--model", f"{net}:SmallNet", "--pooling", "avg", "--epochs", "2",
             "--out", str(runs), "--live", "none", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "SmallNet net, avg pooling" in r.stdout
    r = _cli("train", "--preset", "template", "--pooling", "avg", "--epochs", "3", "--out", str(runs),
             "--live", "none", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (record,) = [p for p in runs.iterdir() if p.name.startswith("SmallNet_avg")]
    config = json.loads((record / "config.json").read_text())
    assert config["model"] == "SmallNet" and len(config["net"]) == 12
    assert "class SmallNet(nn.Module)" in (record / "net.py").read_text()
    assert (record / "model.pt2").is_file()

    r = _cli("compare", "--runs", str(runs), "--best", str(best), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "SmallNet/avg" in r.stdout and "template/avg" in r.stdout
    assert "SmallNet/avg vs template/avg" in r.stdout or "template/avg vs SmallNet/avg" in r.stdout
    chosen = json.loads((best / "config.json").read_text())["model"]
    # a fresh interpreter that never sees the net's file (run from another folder; the file is moved away)
    net.rename(tmp_path / "gone.py")
    code = (f"from cifarlab.export import verify_reload; from cifarlab.data import subset_for; "
            f"from cifarlab.export import load_best; m, cfg, _ = load_best({str(best)!r}); "
            f"s = subset_for(cfg, verbose=False); c = verify_reload({str(best)!r}, s.x_test, s.y_test); "
            f"print(type(m).__name__, c['torch_pred_match'], c['onnx_pred_match'], c['n_test'])")
    r = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    kind, torch_match, onnx_match, n = r.stdout.split()
    assert torch_match == onnx_match == n == "300"
    assert kind == ("Exported" if chosen == "SmallNet" else "TemplateCNN")


def test_a_notebook_class_trains_through_run_and_its_source_is_kept(tmp_path, sample_subset):
    """A class defined in a cell (IPython keeps the cell's text in linecache; inspect cannot find the class
    itself): the record keeps its source."""
    import linecache
    cell = "<ipython-input-7-deadbeef>"
    src = textwrap.dedent(NET).replace("SmallNet", "CellNet")
    linecache.cache[cell] = (len(src), None, src.splitlines(True), cell)
    ns = {"__name__": "__main__"}
    exec(compile(src, cell, "exec"), ns)
    CellNet = ns["CellNet"]
    assert class_source(CellNet).startswith("class CellNet(nn.Module):")
    cfg = make_config("improved", model=CellNet, pooling="stride", epochs=1, device="cpu")
    assert (cfg.model, cfg.pooling) == ("CellNet", "stride") and cfg.configuration_label.startswith("CellNet/stride")
    rec = run(cfg, out=tmp_path, subset=sample_subset, live="none")
    assert rec.ok and "class CellNet(nn.Module):" in (rec.path / "net.py").read_text()
    assert isinstance(build_model(cfg).net, CellNet)
    logits = rec.load_model()(sample_subset.x_test[:5])
    assert np.allclose(logits.detach().numpy(), rec.predictions("test")["logits"][:5], atol=1e-4)


def test_identity_edit_makes_a_new_record_unchanged_is_skipped_and_names_never_collide(tmp_path, sample_subset,
                                                                                       capsys):
    net = _write(tmp_path, NET)
    spec = f"{net}:SmallNet"
    first = run(make_config("improved", model=spec, dry_run=True, device="cpu"), out=tmp_path / "r",
                subset=sample_subset, live="none")
    again = run(make_config("improved", model=spec, dry_run=True, device="cpu"), out=tmp_path / "r",
                subset=sample_subset, live="none")
    assert again.reused and again.path == first.path and "skipped" in capsys.readouterr().out
    # one line edited: a wider layer
    net.write_text(net.read_text().replace("width=8", "width=12"))
    wider = make_config("improved", model=spec, dry_run=True, device="cpu")
    assert wider.net != first.config.net and wider.run_id != first.config.run_id
    rec = run(wider, out=tmp_path / "r", subset=sample_subset, live="none")
    assert not rec.reused and rec.path != first.path and first.path.is_dir()
    # a comment in the class: its source changed, so it is another configuration too
    net.write_text(net.read_text().replace("def forward(self, x):", "def forward(self, x):  # width 12"))
    commented = make_config("improved", model=spec, dry_run=True, device="cpu").net
    assert commented != wider.net
    # the file's other code is the net's too: a helper its forward calls, edited, is never a stale record reused
    calls_act = net.read_text().replace("return self.head(", "return act(self.head(").replace("(x))\n", "(x)))\n")
    net.write_text(calls_act + "\n\ndef act(x):\n    return torch.relu(x)\n")
    relu = make_config("improved", model=spec, dry_run=True, device="cpu")
    net.write_text(net.read_text().replace("torch.relu(x)", "torch.tanh(x)"))
    tanh = make_config("improved", model=spec, dry_run=True, device="cpu")
    assert len({relu.net, tanh.net, commented}) == 3
    rec = run(tanh, out=tmp_path / "r", subset=sample_subset, live="none")
    assert not rec.reused and "torch.tanh(x)" in (rec.path / "net.py").read_text()   # the record keeps the file
    # a student's class named like the shipped improved net's class never shares its record
    clash = _write(tmp_path, NET.replace("SmallNet", "ImprovedCNN"), "clash.py")
    mine = make_config("improved", model=f"{clash}:ImprovedCNN", pooling="max", device="cpu")
    shipped = make_config("improved", pooling="max", device="cpu")
    assert mine.run_id != shipped.run_id and mine.run_name != shipped.run_name
    assert RunConfig.from_dict(mine.to_dict()) == mine      # config.json round-trips without the class


def test_without_a_pooling_argument_it_is_one_configuration(tmp_path):
    net = _write(tmp_path, '''
        from torch import nn
        class Fixed(nn.Module):
            def __init__(self, num_classes):
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
                                          nn.Flatten(), nn.Linear(4, num_classes))
            def forward(self, x):
                return self.body(x)
        ''')
    configs = {make_config("improved", model=f"{net}:Fixed", pooling=p).run_id for p in ("stride", "max", "avg")}
    assert len(configs) == 1
    cfg = make_config("improved", model=f"{net}:Fixed", pooling="max")
    assert cfg.pooling == "own" and cfg.configuration_label.startswith("Fixed/own")


BAD = [
    ("missing file", None, "does not exist"),
    ("no such class", "class Other:\n    pass\n", "defines no 'Net'"),
    ("not a module", "class Net:\n    def __init__(self, num_classes):\n        pass\n", "is not an nn.Module class"),
    ("constructor", "from torch import nn\nclass Net(nn.Module):\n    def __init__(self, classes):\n"
                    "        super().__init__()\n", "Net(num_classes=3) raised TypeError"),
    ("forward raises", "from torch import nn\nclass Net(nn.Module):\n    def __init__(self, num_classes):\n"
                       "        super().__init__()\n        self.fc = nn.Linear(3, num_classes)\n"
                       "    def forward(self, x):\n        return self.fc(x.flatten(1))\n",
     "Net.forward raised RuntimeError"),
    ("10 logits for 3 classes", "from torch import nn\nclass Net(nn.Module):\n    def __init__(self, num_classes):\n"
                                "        super().__init__()\n        self.fc = nn.Linear(3072, 10)\n"
                                "    def forward(self, x):\n        return self.fc(x.flatten(1))\n",
     "returned shape (2, 10); it must return a tensor of shape (2, 3)"),
    ("4-d output", "from torch import nn\nclass Net(nn.Module):\n    def __init__(self, num_classes):\n"
                   "        super().__init__()\n        self.c = nn.Conv2d(3, num_classes, 3)\n"
                   "    def forward(self, x):\n        return self.c(x)\n", "flatten before the last layer"),
    ("NaN", "import torch\nfrom torch import nn\nclass Net(nn.Module):\n    def __init__(self, num_classes):\n"
            "        super().__init__()\n        self.fc = nn.Linear(3072, num_classes)\n"
            "    def forward(self, x):\n        return self.fc(x.flatten(1)) * float('nan')\n", "NaN or infinite"),
    ("too big", "from torch import nn\nclass Net(nn.Module):\n    def __init__(self, num_classes):\n"
                "        super().__init__()\n        self.fc = nn.Linear(200_000, 200_000)\n"
                "    def forward(self, x):\n        return x\n", "40,000,200,000 parameters"),
    ("tuple", "from torch import nn\nclass Net(nn.Module):\n    def __init__(self, num_classes):\n"
              "        super().__init__()\n        self.fc = nn.Linear(3072, num_classes)\n"
              "    def forward(self, x):\n        y = self.fc(x.flatten(1))\n        return y, x\n",
     "returned a tuple"),
]


@pytest.mark.parametrize("case, source, says", BAD, ids=[b[0] for b in BAD])
def test_every_bad_net_is_one_line_before_anything_is_built_for_training(case, source, says, tmp_path):
    if source is not None:
        _write(tmp_path, source)
    with pytest.raises(NetError) as e:
        make_config("template", model=f"{tmp_path / 'net.py'}:Net", epochs=1)
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("case", ["missing file", "forward raises", "too big"])
def test_the_command_line_says_one_line_rc2_writes_nothing_and_shows_only_the_students_frames(case, tmp_path, cli):
    source, says = next((src, says) for c, src, says in BAD if c == case)
    if source is not None:
        _write(tmp_path, source)
    out = tmp_path / "out"
    r = cli("train", "--model", "net.py:Net", "--out", str(out), "--epochs", "1", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("cifarlab: error:") and says in last, r.stderr
    assert not out.exists()                                   # nothing trained, nothing written
    assert "cifarlab/" not in r.stderr.replace("cifarlab: error", "")   # cifarlab's internals stay out
    if case == "forward raises":                              # the student's own frame, and only theirs
        assert f'File "{tmp_path / "net.py"}", line 7, in forward' in r.stderr
        assert "torch/nn/modules" not in r.stderr


def test_a_net_in_a_notebook_cell_shows_its_own_frames_as_python_raises_them(tmp_path):
    class Broken(nn.Module):
        def __init__(self, num_classes):
            super().__init__()

        def forward(self, x):
            return x / undefined_name  # noqa: F821

    with pytest.raises(NetError, match="Broken.forward raised NameError") as e:
        make_config("template", model=Broken)
    frames = [f.name for f in __import__("traceback").extract_tb(e.value.student_error.__traceback__)]
    assert frames == ["forward"]


def test_an_unregistered_net_says_where_to_define_it():
    cfg = RunConfig(model="Ghost", net="0123456789ab", pooling="max")   # as read from a record's config.json
    with pytest.raises(NetError, match="not defined in this process"):
        build_model(cfg)
    torch.manual_seed(0)


def test_a_model_pt2_with_a_pickle_that_runs_code_is_refused(tmp_path):
    """torch.export.load falls back to full unpickling when weights_only fails: cifarlab never lets it."""
    import io
    import pickle
    import zipfile

    from cifarlab.ownnet import load_exported, save_exported

    good = tmp_path / "model.pt2"
    save_exported(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3)).float(), good)
    load_exported(good)                                       # an honest program loads

    class Boom:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('ran')" % str(tmp_path / "pwned"),))

    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("sample_inputs/model.pt"):
                buf = io.BytesIO()
                torch.save(Boom(), buf, pickle_protocol=pickle.DEFAULT_PROTOCOL)
                data = buf.getvalue()
            dst.writestr(item, data)
    with pytest.raises(NetError, match="not a torch.export program that loads safely"):
        load_exported(bad)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_make_run_all_trains_a_file_net_beside_the_shipped_ones(tmp_path):
    """MODELS="template FILE:CLASS": the suite's notebooks train, compare and reload it (03 in its own kernel)."""
    net = _write(tmp_path, NET)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_all.py"), "--out", str(out), "--kernel",
                        "python3", "--models", f"template {net}:SmallNet", "--poolings", "max", "--seeds", "1",
                        "--epochs", "1"], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    names = sorted(p.name.split("_")[0] for p in (out / "runs").iterdir() if not p.name.startswith("."))
    assert names == ["SmallNet", "template"]
    reload = json.loads((out / "apple-otter-pickup_truck" / "notebooks" / "03_reload.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in reload["cells"] for o in c.get("outputs", []))
    assert "PyTorch : 300/300 predictions as recorded" in text and "ONNX    : 300/300" in text


def test_the_command_line_trains_your_net_with_the_improved_recipe_as_the_notebooks_do(tmp_path, monkeypatch):
    # without --preset the course template's recipe (500 epochs at lr 5e-3) would train a student's net
    import cifarlab.experiment
    from cifarlab.cli import main
    seen = []
    monkeypatch.setattr(cifarlab.experiment, "run", lambda cfg, **kw: seen.append(cfg))
    monkeypatch.setattr(cifarlab.experiment, "summarize", lambda record: "")
    net = f"{_write(tmp_path, NET)}:SmallNet"
    assert main(["train", "--model", net, "--pooling", "avg"]) == 0
    assert main(["train", "--model", net, "--preset", "template", "--pooling", "avg"]) == 0
    assert main(["train", "--preset", "improved"]) == 0                      # and the improved net is max-pooled
    mine, as_template, improved = seen
    assert mine == notebook_config(net, (0, 55, 58), "avg", 0)              # what notebook 01 trains
    assert (mine.epochs, mine.lr) == (PRESETS["improved"]["epochs"], PRESETS["improved"]["lr"])
    assert (as_template.epochs, as_template.lr) == (RunConfig.epochs, RunConfig.lr)   # --preset still decides
    assert (improved.model, improved.pooling) == ("improved", "max")
