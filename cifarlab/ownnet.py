"""Your own net: the lab's exercise "now raise the accuracy yourself", with the whole machinery.

Write an ordinary ``nn.Module`` - in a notebook cell or in a ``.py`` file - and train it like the
shipped nets::

    class MyNet(nn.Module):
        def __init__(self, num_classes, pooling="max"):   # pooling is optional
            ...
        def forward(self, x):                              # x: float NCHW, normalized
            ...

    cfg = make_config("improved", model=MyNet, classes=CLASSES, pooling="avg")   # a notebook
    python -m cifarlab train --preset improved --model nets/mynet.py:MyNet       # the command line

What cifarlab does with it:

* builds it as ``MyNet(num_classes=k)``, adding ``pooling=...`` when the constructor takes one (then the
  three tactics apply to it; without one it is a single configuration, pooling ``own``), behind the models'
  ``Normalize``: your net gets float NCHW, normalized, while what is saved and served takes raw uint8 NHWC;
* checks it on a 2-image batch before any data loads (:func:`check_forward`): your bug shows your own frames;
* fingerprints its source (a file's whole text; a notebook class's own code) and structure into the run's
  identity: an edited net is a new configuration;
* saves the trained net as a ``torch.export`` program (``model.pt2``): a fresh kernel reloads it without
  your class (:func:`load_exported` refuses any pickled object in it).
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import linecache
import sys
import textwrap
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import CifarlabError

OWN_POOLING = "own"          # the pooling of a net that takes no ``pooling`` argument: its own design


class NetError(CifarlabError, ValueError):
    """The student's net cannot be used as it is. When the student's own code raised, that exception
    (its traceback cut down to the student's frames) is the ``__cause__`` and is shown above the line."""

    def __init__(self, message: str, cause: BaseException | None = None):
        super().__init__(message)
        self.student_error = _students_frames(cause) if cause is not None else None


@dataclass(frozen=True)
class Net:
    """A registered net: the class, where it came from, and what identifies it."""

    cls: type
    spec: str                    # "MyNet" (a notebook cell) or "/abs/path/mynet.py:MyNet" (a file)
    source: str                  # the class's source text, or "" where Python cannot see it
    takes_pooling: bool


_REGISTRY: dict[str, Net] = {}   # fingerprint -> the net, for this process


# --- finding the class ------------------------------------------------------------------------------
def is_own(model) -> bool:
    """Is ``model`` (a config's or a parameter's value) a student's net: a class, or ``FILE.py:CLASS``?"""
    return isinstance(model, type) or (isinstance(model, str) and ".py:" in model)


def load_class(spec: str) -> type:
    """The class named by ``path/to/file.py:ClassName`` (the file is imported under a private name)."""
    file, _, name = spec.rpartition(":")
    path = Path(file).expanduser().resolve()
    if not path.is_file():
        raise NetError(f"your net {spec}: {path} does not exist; give FILE.py:CLASS, e.g. nets/mynet.py:MyNet")
    module_name = "cifarlab_net_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module = types.ModuleType(module_name)
    module.__file__ = str(path)
    sys.modules[module_name] = module       # inspect.getsource and pickling find the class through it
    try:
        code = compile(path.read_text(), str(path), "exec")
        exec(code, module.__dict__)
    except Exception as e:
        raise NetError(f"your net {spec}: importing {path.name} raised {type(e).__name__}: {e}", e) from e
    cls = module.__dict__.get(name)
    if cls is None:
        classes = sorted(k for k, v in module.__dict__.items() if isinstance(v, type) and _is_module_class(v)
                         and v.__module__ == module_name)
        raise NetError(f"your net {spec}: {path.name} defines no {name!r}"
                       + (f"; its nn.Module classes: {', '.join(classes)}" if classes else ""))
    return cls


def _is_module_class(cls) -> bool:
    from torch import nn
    return isinstance(cls, type) and issubclass(cls, nn.Module)


def class_source(cls: type) -> str:
    """The class's source where Python can see it: its file, or (a notebook cell) the cell IPython keeps.

    ``inspect.getsource`` cannot find a class defined in a notebook cell on Python < 3.13; its methods
    still know their cell, so the class statement is found there, above its first method."""
    try:
        return textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        pass
    for fn in vars(cls).values():
        code = getattr(fn, "__code__", None)
        if code is None:
            continue
        lines = linecache.getlines(code.co_filename)
        start = next((i for i in range(code.co_firstlineno - 1, -1, -1)
                      if lines[i].lstrip().startswith(f"class {cls.__name__}")), None) if lines else None
        if start is not None:
            return textwrap.dedent("".join(inspect.getblock(lines[start:])))
    return ""


# --- building and checking ---------------------------------------------------------------------------
def _kwargs(net: Net, num_classes: int, pooling: str) -> dict:
    return {"num_classes": num_classes, **({"pooling": pooling} if net.takes_pooling else {})}


def instantiate(net: Net, num_classes: int, pooling: str):
    """``cls(num_classes=k[, pooling=...])``: how cifarlab builds every student's net."""
    kwargs = _kwargs(net, num_classes, pooling)
    call = f"{net.cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    try:
        return net.cls(**kwargs)
    except Exception as e:
        raise NetError(f"{call} raised {type(e).__name__}: {e}. cifarlab builds your net as "
                       f"{net.cls.__name__}(num_classes=k), adding pooling=... when __init__ takes a pooling "
                       f"argument", e) from e


def register(model, num_classes: int, pooling: str, device: str = "auto") -> tuple[str, str, str]:
    """Check the student's net (a class or ``FILE.py:CLASS``) for ``num_classes`` and ``pooling`` and
    remember it; returns (class name, the pooling it runs with, its fingerprint) for the config."""
    spec = model if isinstance(model, str) else None
    cls = load_class(model) if spec else model
    if not _is_module_class(cls):
        raise NetError(f"model={cls!r} is not an nn.Module class: define `class MyNet(nn.Module)` with __init__"
                       f"(self, num_classes, ...) and forward(self, x), and pass the class itself (not an instance)")
    if cls.__name__.lower() in ("template", "improved"):
        raise NetError(f"your net's class is called {cls.__name__!r}, the name of a shipped net: rename it")
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    takes_pooling = "pooling" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    file = inspect.getsourcefile(cls) if spec else None
    # a file's whole text, so that editing a helper the class calls is a new configuration too
    net = Net(cls, f"{Path(file).resolve()}:{cls.__name__}" if file else cls.__name__,
              Path(file).read_text() if file else class_source(cls), takes_pooling)
    if not takes_pooling:
        pooling = OWN_POOLING
    elif pooling == OWN_POOLING:
        raise NetError(f"{cls.__name__} takes a pooling argument: give pooling stride, max or avg")
    check_fits(net, num_classes, pooling, device)
    module = instantiate(net, num_classes, pooling)
    # what the net is, whatever its source: parameter and buffer names and shapes, and the module tree
    structure = {"parameters": [[n, list(p.shape)] for n, p in module.named_parameters()],
                 "buffers": [[n, list(b.shape)] for n, b in module.named_buffers()],
                 "modules": repr(module)}
    fingerprint = hashlib.sha256(json.dumps({"name": cls.__name__, "source": net.source, **structure},
                                            sort_keys=True).encode()).hexdigest()[:12]
    check_forward(module, num_classes)
    _REGISTRY[fingerprint] = net
    return cls.__name__, pooling, fingerprint


def check_forward(module, num_classes: int) -> None:
    """A 2-image batch (float NCHW, normalized, as in training) must give (2, k) finite logits."""
    import torch

    name = type(module).__name__
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = module.train()(x)
    except Exception as e:
        raise NetError(f"{name}.forward raised {type(e).__name__} on a batch of 2 images: {e}. It receives "
                       f"float images of shape (N, 3, 32, 32), normalized, and must return (N, {num_classes}) "
                       f"logits", e) from e
    want = f"a tensor of shape (2, {num_classes}): one logit per class for each of the 2 images"
    if not isinstance(out, torch.Tensor):
        raise NetError(f"{name}.forward returned a {type(out).__name__}; it must return {want}"
                       + (" (return the logits only)" if isinstance(out, (tuple, list, dict)) else ""))
    if tuple(out.shape) != (2, num_classes):
        hint = (f" (the last layer should have out_features={num_classes}: use num_classes)" if out.dim() == 2
                else " (flatten before the last layer)" if out.dim() > 2 else "")
        raise NetError(f"{name}.forward returned shape {tuple(out.shape)}; it must return {want}{hint}")
    if not torch.isfinite(out).all():
        raise NetError(f"{name}.forward returned NaN or infinite logits for a batch of 2 ordinary images; check "
                       f"its layers (a division by zero, a log of a negative number?)")


def check_fits(net: Net, num_classes: int, pooling: str, device: str) -> None:
    """Before the net is built for real: its weights, gradients and optimizer state (counted on the
    ``meta`` device, where nothing is allocated) must fit the memory of the device it will train on."""
    import os

    import torch
    try:
        with torch.device("meta"):
            n = sum(p.numel() for p in net.cls(**_kwargs(net, num_classes, pooling)).parameters())
    except Exception:     # built for real next, where a real error shows the student's frames
        return
    need = n * 4 * 4      # fp32 weights, gradients, momentum, and as much again for activations and slack
    if device.startswith(("cuda", "auto")) and torch.cuda.is_available():
        where, free = "the GPU", torch.cuda.mem_get_info(torch.device(device.replace("auto", "cuda")))[0]
    else:
        where, free = "this machine", os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > free:
        raise NetError(f"{net.cls.__name__} has {n:,d} parameters: training it needs about {need / 2**30:.1f} GiB, "
                       f"and {where} has {free / 2**30:.1f} GiB free; make the net smaller")


def lookup(name: str, fingerprint: str) -> Net:
    """The registered net of a config, or a clear error when this process has not seen it."""
    net = _REGISTRY.get(fingerprint)
    if net is None:
        raise NetError(f"the net {name} (fingerprint {fingerprint}) is not defined in this process: run the cell "
                       f"that defines it and makes the config again, or give it as FILE.py:{name}")
    return net


def portable(fingerprint: str):
    """What a worker process needs to build the net again: the ``FILE:CLASS`` spec of a file's class, or
    the class itself (a notebook's class travels by value with Ray's cloudpickle)."""
    net = _REGISTRY[fingerprint]
    return net.spec if ".py:" in net.spec else net.cls


def source_text(fingerprint: str) -> str:
    """What a record keeps for a person to read: where the net came from and its source."""
    net = _REGISTRY[fingerprint]   # a trained net was built from the registry (models.build_model)
    return (f"# {net.cls.__name__} (fingerprint {fingerprint}) from {net.spec}\n"
            + (net.source or "# its source was not visible to Python\n"))


# --- saving and reloading without the class -----------------------------------------------------------
def save_exported(model, path) -> None:
    """The whole trained model (Normalize included: uint8 NHWC in, logits out) as a torch.export program."""
    import torch
    model = model.eval().cpu()
    example = torch.zeros(2, 32, 32, 3, dtype=torch.uint8)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, str(path))


def load_exported(path):
    """Load ``model.pt2`` without running anything from the file: every pickled piece in it must load with
    ``weights_only=True`` (torch.export.load itself would fall back to full unpickling), the graph is JSON."""
    import torch
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.endswith((".pt", ".pkl")):
                    torch.load(io.BytesIO(z.read(name)), weights_only=True)
        program = torch.export.load(str(path))
    except Exception as e:
        raise NetError(f"{path} is not a torch.export program that loads safely ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}); it is not loaded") from None
    return program.module()


# --- the student's frames --------------------------------------------------------------------------------
def _students_frames(e: BaseException) -> BaseException:
    """``e`` with its traceback cut down to frames outside cifarlab and torch: the student's cell or file."""
    import torch
    hidden = (str(Path(__file__).resolve().parent), str(Path(torch.__file__).resolve().parent),
              str(Path(inspect.getfile(zipfile)).resolve().parent / "importlib"))
    frames = []
    tb = e.__traceback__
    while tb is not None:
        if not str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(hidden):
            frames.append(tb)
        tb = tb.tb_next
    new = None
    for t in reversed(frames):
        new = types.TracebackType(new, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return e.with_traceback(new)
