"""CIFAR-100 on disk and in memory: find or download it, verify it, pick classes, split.

Where the data comes from (the extracted folder, the archive, the shipped sample, a verified download)
and which folder is the data folder: docs/records.md, "Data". Images stay raw uint8 NHWC, as in the
course template; labels are int64 indices 0..k-1 in ascending fine-id order.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .classes import ClassSelection, select_classes
from .errors import CifarlabError
from .files import building, publish_dir, user_path

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
OFFICIAL_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
ARCHIVE_NAME = "cifar-100-python.tar.gz"
FOLDER_NAME = "cifar-100-python"
SAMPLE_PATH = Path(__file__).with_name("sample") / "cifar100_sample_0_55_58.npz"


class DataDirError(CifarlabError, ValueError):
    """The data folder option names something that cannot be a data folder (a user mistake: rc 2)."""


class DataError(CifarlabError, RuntimeError):
    """The data is missing, corrupt or unreachable; the message names the file and the fix."""

    exit_code = 1


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The explicit argument, else ``$CIFARLAB_DATA``, else the per-user cache folder."""
    if data_dir:
        return user_path(data_dir, "--data-dir")
    if os.environ.get("CIFARLAB_DATA"):
        return user_path(os.environ["CIFARLAB_DATA"], "$CIFARLAB_DATA")
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "cifarlab"


def _extract(archive: Path, root: Path) -> Path:
    """Extract into a temporary folder beside the target, then move into place, so an
    interrupted or failed extraction never leaves a half folder that looks complete."""
    with building(root, "extract") as tmp:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(tmp)
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise DataError(
                f"{archive} is not a complete CIFAR-100 archive ({type(e).__name__}: {e}). "
                f"It is probably truncated: delete it and run again to download it afresh, "
                f"or put a good copy of {ARCHIVE_NAME} there.") from e
        if not (tmp / FOLDER_NAME).is_dir():
            raise DataError(f"{archive} does not contain a {FOLDER_NAME}/ folder; is it the CIFAR-100 python archive?")
        return publish_dir(tmp / FOLDER_NAME, root / FOLDER_NAME)


def download_archive(root: Path) -> Path:
    """Download the archive (from ``$CIFARLAB_URL`` for a mirror) to ``root`` and verify its md5 before it takes
    the real name. A download whose checksum does not match is deleted, never used."""
    from torchvision.datasets.utils import download_url  # deferred: torchvision is slow to import

    url = os.environ.get("CIFARLAB_URL") or OFFICIAL_URL
    md5 = os.environ.get("CIFARLAB_MD5") or OFFICIAL_MD5
    root.mkdir(parents=True, exist_ok=True)
    part = ARCHIVE_NAME + ".part"
    try:
        download_url(url, str(root), filename=part)
    except Exception as e:  # urllib raises many kinds; all mean the same to the user
        (root / part).unlink(missing_ok=True)
        raise DataError(
            f"could not download CIFAR-100 from {url} ({type(e).__name__}: {e}). If you are offline, "
            f"put {ARCHIVE_NAME} or the extracted {FOLDER_NAME}/ folder in {root} "
            f"(or point $CIFARLAB_DATA at a folder holding it).") from e
    h = hashlib.md5()
    with open(root / part, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    got = h.hexdigest()
    if got != md5:
        (root / part).unlink(missing_ok=True)
        raise DataError(
            f"the download from {url} has md5 {got}, expected {md5}: it is truncated or not the right "
            f"file, and was deleted. Run again to retry; for a mirror with another checksum set "
            f"$CIFARLAB_MD5.")
    os.replace(root / part, root / ARCHIVE_NAME)
    return root / ARCHIVE_NAME


def ensure_dataset(data_dir=None, *, download: bool = True) -> Path:
    """Return the extracted ``cifar-100-python/`` folder, extracting or downloading as needed."""
    root = default_data_dir(data_dir)
    folder = root / FOLDER_NAME
    if folder.is_dir():
        return folder
    archive = root / ARCHIVE_NAME
    if not archive.is_file():
        if not download:
            raise DataError(
                f"CIFAR-100 is not in {root}: expected {FOLDER_NAME}/ or {ARCHIVE_NAME} there. "
                f"Download {OFFICIAL_URL} into it, point $CIFARLAB_DATA at a folder that has it, "
                f"or allow the download.")
        archive = download_archive(root)
    return _extract(archive, root)


def full_dataset_on_disk(data_dir=None) -> bool:
    root = default_data_dir(data_dir)
    return (root / FOLDER_NAME).is_dir() or (root / ARCHIVE_NAME).is_file()


def check_data_dir(data_dir=None, option: str = "--data-dir") -> None:
    """Before any work: the data folder must be a folder (or not exist yet: it is created). ``option``: how the
    caller names it (make: ``DATA_DIR``)."""
    root = default_data_dir(data_dir)
    if root.exists() and not root.is_dir():
        what = option if data_dir else ("$CIFARLAB_DATA" if os.environ.get("CIFARLAB_DATA") else "the cache")
        raise DataDirError(f"{what} {root} is a file, not a folder: pass the folder that holds (or will hold) "
                           f"{FOLDER_NAME}/ or {ARCHIVE_NAME}")


def data_source(class_ids, data_dir=None) -> str:
    """Where the pixels of these classes come from (``"download"``: the full dataset, fetched first); decided
    here only."""
    if full_dataset_on_disk(data_dir):
        return "full"
    with np.load(SAMPLE_PATH) as z:
        if set(class_ids) <= set(np.unique(z["y_test"]).tolist()):
            return "sample"
    return "download"


class _CifarUnpickler(pickle.Unpickler):
    """Reads what the CIFAR-100 pickles hold - dicts, lists, strings, bytes, numbers and numpy arrays - and
    nothing else: a pickle may name any function to call, so a crafted file could run code. The official
    files name only numpy's array rebuilder (numpy.core.multiarray._reconstruct, numpy._core... in numpy 2),
    numpy.ndarray and numpy.dtype; a copy pickled again by Python 3 (protocol 2) adds _codecs.encode for bytes."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-100 pickle never does (refused: "
                                         f"unpickling it could run code)")
        import codecs
        return {"_reconstruct": np.ndarray.__reduce__(np.zeros(1))[0], "ndarray": np.ndarray, "dtype": np.dtype,
                "encode": codecs.encode}[name]


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All images of ``train`` or ``test`` as uint8 NHWC, and their fine labels."""
    path = Path(folder) / split
    if not path.is_file():
        raise DataError(f"{path} is missing: the {FOLDER_NAME}/ folder is incomplete. "
                        f"Delete {path.parent} and run again to extract or download it afresh.")
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="latin1").load()
        data = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d["fine_labels"], dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except Exception as e:   # not a pickle, a refused one, or not the CIFAR-100 layout
        raise DataError(f"{path} is not a readable CIFAR-100 pickle ({type(e).__name__}: {e}). "
                        f"Delete {path.parent} and run again to extract or download it afresh.") from e
    if len(images) != len(labels):
        raise DataError(f"{path}: {len(images)} images but {len(labels)} labels; the file is corrupt.")
    return np.ascontiguousarray(images), labels


def load_sample() -> dict[str, np.ndarray]:
    with np.load(SAMPLE_PATH) as z:
        return {k: z[k] for k in z.files}


@dataclass
class Subset:
    """The chosen classes in memory: uint8 NHWC images, int64 labels 0..k-1; validation is carved from the
    training images (docs/records.md, "Validation split")."""

    classes: ClassSelection
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str

    def to(self, device) -> "Subset":
        moved = {k: getattr(self, k).to(device) for k in
                 ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
        return Subset(self.classes, source=self.source, **moved)

    def __str__(self) -> str:
        return (f"{self.classes.num_classes} classes ({self.classes}) from {self.source}: "
                f"{len(self.y_train)} train, {len(self.y_val)} validation, {len(self.y_test)} test images")


def subset_for(config, data_dir=None, verbose: bool = True) -> Subset:
    """The data a run config trains and is judged on: its classes, its validation fraction and split seed."""
    return load_subset(config.classes, data_dir=data_dir, val_fraction=config.val_fraction,
                       split_seed=config.split_seed, verbose=verbose)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): ``round(fraction * n_c)`` of each class go to validation (``fraction``: checked
    by RunConfig)."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        val.append(rng.permutation(idx)[: int(round(fraction * len(idx)))])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def _select_rows(images, fine, selection: ClassSelection):
    keep = np.isin(fine, selection.ids)
    lut = np.full(100, -1, dtype=np.int64)
    lut[list(selection.ids)] = np.arange(selection.num_classes)
    return images[keep], lut[fine[keep]]


def load_subset(classes=(0, 55, 58), *, data_dir=None, val_fraction: float = 0.1, split_seed: int = 0,
                verbose: bool = True) -> Subset:
    """Load the chosen classes (ids, names or superclasses) as a :class:`Subset` on the CPU."""
    selection = select_classes(classes)
    check_data_dir(data_dir)
    if data_source(selection.ids, data_dir) == "sample":
        s = load_sample()
        x_tr, y_tr = _select_rows(s["x_train"], s["y_train"], selection)
        x_te, y_te = _select_rows(s["x_test"], s["y_test"], selection)
        source = f"the sample shipped with cifarlab ({SAMPLE_PATH.name}; same pixels as CIFAR-100, no download)"
    else:
        folder = ensure_dataset(data_dir)
        x_tr, y_tr = _select_rows(*read_split(folder, "train"), selection)
        x_te, y_te = _select_rows(*read_split(folder, "test"), selection)
        source = str(folder)
    train_idx, val_idx = stratified_split(y_tr, val_fraction, split_seed)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    subset = Subset(selection, t(x_tr[train_idx]), t(y_tr[train_idx]), t(x_tr[val_idx]), t(y_tr[val_idx]),
                    t(x_te), t(y_te), source)
    if verbose:
        print(f"Loaded {subset}")
    return subset
