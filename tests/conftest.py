import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar-100-python.tar.gz"


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    """No test reads or writes the user's cache: the default data folder is an empty temp dir."""
    d = tmp_path / "cifarlab-data"
    d.mkdir()
    monkeypatch.setenv("CIFARLAB_DATA", str(d))
    monkeypatch.delenv("CIFARLAB_URL", raising=False)
    monkeypatch.delenv("CIFARLAB_MD5", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    yield d


@pytest.fixture(scope="session")
def full_data_dir(tmp_path_factory):
    """A data folder holding the extracted real CIFAR-100 (from ../shared), or skip."""
    if not SHARED_ARCHIVE.is_file():
        pytest.skip(f"the full CIFAR-100 archive is not at {SHARED_ARCHIVE}")
    d = tmp_path_factory.mktemp("full-cifar")
    with tarfile.open(SHARED_ARCHIVE, "r:gz") as tar:
        tar.extractall(d)
    assert (d / "cifar-100-python" / "train").is_file()
    return d


@pytest.fixture(scope="session")
def sample_subset(tmp_path_factory):
    """Classes 0, 55, 58 from the sample shipped in the package (an empty data folder)."""
    from cifarlab.data import load_subset
    return load_subset((0, 55, 58), data_dir=tmp_path_factory.mktemp("empty"), verbose=False)
