"""cifarlab: train a CNN on your own CIFAR-100 classes and compare pooling tactics.

One module per job (CONTRIBUTING.md lists them); heavy modules are imported lazily, so ``import cifarlab`` is cheap.
"""
__version__ = "0.1.0"

from pathlib import Path as _Path

from .classes import ClassSelection, ClassSelectionError, select_classes  # noqa: F401
from .config import PRESETS, RunConfig, make_config  # noqa: F401


def notebook_setup() -> None:
    """The notebooks' first call: say what runs, and show cifarlab's own errors as one line."""
    from .errors import short_errors
    short_errors()
    import torch
    print(f"cifarlab {__version__}, torch {torch.__version__}, "
          f"{'CUDA: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU: training on the CPU'}")


COLAB_DRIVE = _Path("/content/drive/MyDrive")


def out_path(*parts: str) -> str:
    """Where a notebook run by hand writes (its ``OUT`` / ``RUNS`` / ``BEST`` defaults): ``out/`` at
    the top of this cifarlab clone when the notebook runs inside the clone (from ``notebooks/``: beside
    what ``make run-all`` writes, and ignored by git); in Colab with Google Drive mounted,
    ``MyDrive/cifarlab/out`` (each Colab notebook has a runtime of its own: Drive is what they share);
    else ``out/`` in the working directory (Colab without Drive: ``/content/out``)."""
    if COLAB_DRIVE.is_dir():
        return str(COLAB_DRIVE.joinpath("cifarlab", "out", *parts))
    cwd = _Path.cwd().resolve()
    clone = _Path(__file__).resolve().parent.parent
    inside = (clone / "pyproject.toml").is_file() and (clone / "notebooks").is_dir() and (
        cwd == clone or clone in cwd.parents)
    return str((clone if inside else cwd).joinpath("out", *parts))
