import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from cifarlab.classes import FINE_NAMES, select_classes
from cifarlab.data import (
    DataError,
    default_data_dir,
    ensure_dataset,
    load_sample,
    load_subset,
    read_split,
    stratified_split,
)

# --- a tiny archive in the exact CIFAR-100 layout, served from loopback ---------------------------------

def make_archive(path: Path, classes=(1, 2, 3), n_train=20, n_test=5, seed=0) -> tuple[Path, dict]:
    rng = np.random.default_rng(seed)
    truth = {}
    with tarfile.open(path, "w:gz") as tar:
        def add(name, obj):
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        for split, n in (("train", n_train), ("test", n_test)):
            fine = np.repeat(classes, n)
            data = rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)
            truth[split] = (data, fine)
            add(split, {"data": data, "fine_labels": fine.tolist(), "coarse_labels": [0] * len(fine),
                        "filenames": [f"{split}_{i}.png" for i in range(len(fine))], "batch_label": split})
        add("meta", {"fine_label_names": list(FINE_NAMES), "coarse_label_names": ["x"] * 20})
    return path, truth


class Server:
    """Serve one payload at /cifar-100-python.tar.gz from 127.0.0.1 on a free port."""

    def __init__(self, payload: bytes, declared_length: int | None = None):
        outer = self
        self.payload, self.declared = payload, declared_length
        self.hits = 0

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(outer.declared or len(outer.payload)))
                self.end_headers()
                self.wfile.write(outer.payload)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cifar-100-python.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive(tmp_path):
    path, truth = make_archive(tmp_path / "src.tar.gz")
    return path.read_bytes(), truth


def _mirror(monkeypatch, url, md5=None):
    """A download from ``url`` (a test server), as a mirror is set: $CIFARLAB_URL and $CIFARLAB_MD5."""
    monkeypatch.setenv("CIFARLAB_URL", url)
    if md5:
        monkeypatch.setenv("CIFARLAB_MD5", md5)


def test_download_verify_extract_load(tmp_path, archive, monkeypatch):
    payload, truth = archive
    srv = Server(payload)
    try:
        root = tmp_path / "data"
        _mirror(monkeypatch, srv.url, hashlib.md5(payload).hexdigest())
        sub = load_subset([1, 3], data_dir=root, val_fraction=0.25, verbose=False)
    finally:
        srv.close()
    assert srv.hits >= 1  # (torchvision may probe the URL for redirects first)
    assert (root / "cifar-100-python.tar.gz").is_file() and (root / "cifar-100-python" / "train").is_file()
    assert not list(root.glob("*.part")) and not list(root.glob(".tmp-*"))
    assert len(sub.y_train) + len(sub.y_val) == 40 and len(sub.y_val) == 10 and len(sub.y_test) == 10
    # the pixels are the served ones, NHWC, labels renumbered 0..k-1
    data, fine = truth["test"]
    want = data[np.isin(fine, [1, 3])].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    assert torch.equal(sub.x_test, torch.from_numpy(np.ascontiguousarray(want)))
    assert sub.y_test.tolist() == [0] * 5 + [1] * 5
    assert str(root) in sub.source
    # second call: no download, the extracted folder is read
    _mirror(monkeypatch, "http://127.0.0.1:9/none")
    sub2 = load_subset([1, 3], data_dir=root, verbose=False)
    assert torch.equal(sub2.x_test, sub.x_test)


def test_wrong_md5_is_rejected_and_deleted(tmp_path, archive, monkeypatch):
    payload, _ = archive
    srv = Server(payload)
    root = tmp_path / "data"
    _mirror(monkeypatch, srv.url, "0" * 32)
    try:
        with pytest.raises(DataError) as e:
            ensure_dataset(root)
    finally:
        srv.close()
    msg = str(e.value)
    assert "md5" in msg and "0" * 32 in msg and "deleted" in msg
    assert list(root.iterdir()) == []  # nothing half-downloaded is left to be used later


def test_truncated_download_is_rejected(tmp_path, archive, monkeypatch):
    payload, _ = archive
    srv = Server(payload[: len(payload) // 2], declared_length=len(payload))
    root = tmp_path / "data"
    _mirror(monkeypatch, srv.url, hashlib.md5(payload).hexdigest())
    try:
        with pytest.raises(DataError) as e:
            ensure_dataset(root)
    finally:
        srv.close()
    assert "cifar-100-python" in str(e.value)
    assert list(root.iterdir()) == []


def test_truncated_archive_on_disk(tmp_path, archive):
    payload, _ = archive
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError) as e:
        ensure_dataset(tmp_path, download=False)
    assert "truncated" in str(e.value) and "cifar-100-python.tar.gz" in str(e.value)
    assert not (tmp_path / "cifar-100-python").exists()


def test_corrupt_pickle_names_the_file(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(b"this is not a pickle")
    with pytest.raises(DataError) as e:
        read_split(folder, "train")
    assert str(folder / "train") in str(e.value) and "Delete" in str(e.value)


def test_offline_without_data_says_where(tmp_path, monkeypatch):
    # port 9 (discard) on loopback: nothing listens, the connection is refused at once
    _mirror(monkeypatch, "http://127.0.0.1:9/cifar-100-python.tar.gz")
    with pytest.raises(DataError) as e:
        load_subset([1, 2], data_dir=tmp_path, verbose=False)
    msg = str(e.value)
    assert str(tmp_path) in msg and "CIFARLAB_DATA" in msg and "offline" in msg
    with pytest.raises(DataError, match="expected cifar-100-python/"):
        ensure_dataset(tmp_path, download=False)


def test_data_dir_resolution(tmp_path, monkeypatch):
    assert default_data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("CIFARLAB_DATA", str(tmp_path / "env"))
    assert default_data_dir() == tmp_path / "env"
    monkeypatch.delenv("CIFARLAB_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "cifarlab"


def test_sample_is_used_offline_for_the_default_classes(_isolated_data_dir):
    sub = load_subset(["apple", "otter", "pickup_truck"], verbose=False)
    assert "sample" in sub.source
    assert len(sub.y_train) + len(sub.y_val) == 1500 and len(sub.y_test) == 300
    assert sub.x_train.dtype == torch.uint8 and sub.x_train.shape[1:] == (32, 32, 3)
    assert sub.y_train.dtype == torch.int64
    assert torch.bincount(sub.y_test).tolist() == [100, 100, 100]
    assert torch.bincount(sub.y_val).tolist() == [50, 50, 50]  # default fraction 0.1, stratified
    # a subset of the sample's classes works too
    assert load_subset("apple,otter", verbose=False).classes.ids == (0, 55)


def test_stratified_split_is_seeded_and_disjoint():
    labels = np.repeat([0, 1, 2], [100, 60, 40])
    tr, va = stratified_split(labels, 0.1, seed=3)
    assert np.bincount(labels[va]).tolist() == [10, 6, 4]
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 200
    tr2, va2 = stratified_split(labels, 0.1, seed=3)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, stratified_split(labels, 0.1, seed=4)[1])
    assert len(stratified_split(labels, 0.0, 0)[1]) == 0


# --- the real CIFAR-100 (../shared), when it is there ------------------------------------------------

def test_real_data_counts_and_channel_means(full_data_dir):
    x, y = read_split(full_data_dir / "cifar-100-python", "train")
    assert x.shape == (50000, 32, 32, 3) and np.bincount(y).tolist() == [500] * 100
    mean = x.reshape(-1, 3).mean(0) / 255
    assert np.allclose(mean, [0.50707516, 0.48654887, 0.44091784], atol=1e-6)
    xt, yt = read_split(full_data_dir / "cifar-100-python", "test")
    assert xt.shape == (10000, 32, 32, 3) and np.bincount(yt).tolist() == [100] * 100


def test_real_data_by_superclass(full_data_dir):
    sub = load_subset("vehicles_1", data_dir=full_data_dir, verbose=False)
    assert sub.classes.ids == select_classes("bicycle,bus,motorcycle,pickup_truck,train").ids
    assert str(full_data_dir) in sub.source
    assert torch.bincount(torch.cat([sub.y_train, sub.y_val])).tolist() == [500] * 5
    assert torch.bincount(sub.y_test).tolist() == [100] * 5


def test_shipped_sample_equals_full_dataset(full_data_dir):
    s = load_sample()
    for split in ("train", "test"):
        x, y = read_split(full_data_dir / "cifar-100-python", split)
        keep = np.isin(y, [0, 55, 58])
        assert np.array_equal(s[f"x_{split}"], x[keep]) and np.array_equal(s[f"y_{split}"], y[keep])
    full = load_subset([0, 55, 58], data_dir=full_data_dir, verbose=False)
    sample = load_subset([0, 55, 58], verbose=False)
    assert "sample" in sample.source and "sample" not in full.source
    for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(full, k), getattr(sample, k))
