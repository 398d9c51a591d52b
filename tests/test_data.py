"""Tests for sanity_cli.data: IDX reader, the idx / bundled / tfds / auto sources, label permutation.

Nothing here uses the network: the download-server probe is replaced by a stub, and the tfds test
prepares a tiny MNIST in tmp_path through tfds's own MNIST builder with local files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from sanity_cli import data
from sanity_cli.data import Dataset, fingerprint, load_dataset, permute_labels, read_idx
from sanity_cli.errors import SanityError

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype("uint8"): 0x08, np.dtype("int32"): 0x0C}[arr.dtype]
    dims = b"".join(struct.pack(">I", d) for d in arr.shape)
    return bytes([0, 0, code, arr.ndim]) + dims + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    raw = idx_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def tiny_arrays(n_train=12, n_test=4, seed=0, size=28):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test).astype(np.uint8),
    }


def write_idx_dir(directory: Path, arrays: dict, gz: bool = True, skip=()) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    return {k: write_idx(directory / IDX_NAMES[k], a, gz) for k, a in arrays.items() if k not in skip}


def assert_one_line_error(excinfo, *fragments):
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


class Lines(list):
    def __call__(self, line):
        self.append(line)


@pytest.fixture
def offline(monkeypatch):
    """The download-server probe reports unreachable, and any real socket connect fails loudly."""
    calls = []

    def unreachable(host, port, timeout):
        calls.append((host, port, timeout))
        return False

    def no_connect(*args, **kwargs):
        raise AssertionError("test tried to open a network connection")

    monkeypatch.setattr(data, "_server_reachable", unreachable)
    monkeypatch.setattr(data.socket, "create_connection", no_connect)
    return calls


@pytest.fixture(scope="module")
def real_mnist():
    return load_dataset("mnist", "idx", path=str(MNIST_DIR), log=lambda line: None)


# ------------------------------------------------------------------------------------------ idx


def test_idx_real_mnist(real_mnist):
    ds = real_mnist
    assert isinstance(ds, Dataset) and ds.name == "mnist"
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0 and ds.x_test.max() == 1.0
    assert ds.y_train[:10].tolist() == FIRST_TRAIN_LABELS
    assert np.bincount(ds.y_test, minlength=10).sum() == 10000 and set(np.unique(ds.y_train)) == set(range(10))
    assert ds.class_names == [str(d) for d in range(10)]
    prov = ds.provenance
    json.dumps(prov)
    assert prov["source"] == "idx" and prov["name"] == "mnist"
    assert prov["n_train"] == 60000 and prov["n_test"] == 10000 and "CC BY-SA 3.0" in prov["license"]
    assert prov["path"] == str(MNIST_DIR.resolve())
    for stem in IDX_NAMES.values():
        file = MNIST_DIR / f"{stem}.gz"
        assert prov["sha256"][file.name] == hashlib.sha256(file.read_bytes()).hexdigest()


def test_idx_logs_one_line():
    lines = Lines()
    load_dataset("mnist", "idx", path=str(MNIST_DIR), log=lines)
    assert lines == [f"data: mnist from IDX files in {MNIST_DIR.resolve()} (60000 train / 10000 test images)"]


@pytest.mark.parametrize("gz", [True, False])
def test_idx_fashion_mnist_generated(tmp_path, gz):
    arrays = tiny_arrays()
    files = write_idx_dir(tmp_path / "fmnist", arrays, gz=gz)
    lines = Lines()
    ds = load_dataset("fashion_mnist", "idx", path=str(tmp_path / "fmnist"), log=lines)
    assert ds.name == "fashion_mnist"
    assert ds.class_names == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                              "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert ds.x_train.shape == (12, 28, 28, 1) and ds.x_test.shape == (4, 28, 28, 1)
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays["x_train"].astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.x_test[..., 0], arrays["x_test"].astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y_train, arrays["y_train"].astype(np.int64))
    np.testing.assert_array_equal(ds.y_test, arrays["y_test"].astype(np.int64))
    assert ds.y_train.dtype == np.int64
    prov = ds.provenance
    json.dumps(prov)
    assert prov["source"] == "idx" and prov["n_train"] == 12 and prov["n_test"] == 4
    assert "MIT" in prov["license"]
    assert prov["sha256"] == {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files.values()}
    assert len(lines) == 1 and lines[0].startswith("data: fashion_mnist from IDX files in ")


def test_auto_with_path_uses_idx(tmp_path, offline):
    write_idx_dir(tmp_path / "d", tiny_arrays())
    ds = load_dataset("fashion_mnist", "auto", path=str(tmp_path / "d"), log=lambda line: None)
    assert ds.provenance["source"] == "idx" and offline == []


def test_read_idx_gzip_and_raw_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.int32).reshape(2, 3, 4) - 7
    for gz in (True, False):
        out = read_idx(write_idx(tmp_path / f"a{gz}", arr, gz=gz))
        assert out.dtype == np.int32 and out.dtype.isnative
        np.testing.assert_array_equal(out, arr)
    first = read_idx(MNIST_DIR / "train-labels-idx1-ubyte.gz")
    assert first.shape == (60000,) and first.dtype == np.uint8 and first[:10].tolist() == FIRST_TRAIN_LABELS


# ---------------------------------------------------------------------------------- idx errors


def test_read_idx_bad_magic(tmp_path):
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(SanityError) as excinfo:
        read_idx(bad)
    assert_one_line_error(excinfo, "bad IDX magic", str(bad))
    bad.write_bytes(bytes([0, 0, 0x42, 3]) + bytes(100))  # unknown type code
    with pytest.raises(SanityError) as excinfo:
        read_idx(bad)
    assert_one_line_error(excinfo, "bad IDX magic")


def test_read_idx_truncated(tmp_path):
    raw = idx_bytes(np.zeros((10, 28, 28), np.uint8))
    cut = tmp_path / "cut-idx3-ubyte"
    cut.write_bytes(raw[:-100])
    with pytest.raises(SanityError) as excinfo:
        read_idx(cut)
    assert_one_line_error(excinfo, "truncated", "(10, 28, 28)", "re-download")
    cut.write_bytes(raw[:10])  # inside the header
    with pytest.raises(SanityError) as excinfo:
        read_idx(cut)
    assert_one_line_error(excinfo, "truncated")
    # a truncated gzip stream
    cut_gz = tmp_path / "cut-idx3-ubyte.gz"
    cut_gz.write_bytes(gzip.compress(raw)[:-30])
    with pytest.raises(SanityError) as excinfo:
        read_idx(cut_gz)
    assert_one_line_error(excinfo, "gzip", "re-download")
    # trailing garbage
    cut.write_bytes(raw + b"xx")
    with pytest.raises(SanityError) as excinfo:
        read_idx(cut)
    assert_one_line_error(excinfo, "2 unexpected bytes")
    with pytest.raises(SanityError) as excinfo:
        read_idx(tmp_path / "nope")
    assert_one_line_error(excinfo, "does not exist")


def test_idx_wrong_shape_images(tmp_path):
    arrays = tiny_arrays()
    arrays["x_train"] = np.zeros((5, 20, 20), np.uint8)
    arrays["y_train"] = np.zeros(5, np.uint8)
    write_idx_dir(tmp_path, arrays)
    with pytest.raises(SanityError) as excinfo:
        load_dataset("mnist", "idx", path=str(tmp_path), log=lambda line: None)
    assert_one_line_error(excinfo, "train-images-idx3-ubyte.gz has shape (5,20,20), expected (N,28,28)")


def test_idx_wrong_ndim_labels(tmp_path):
    arrays = tiny_arrays()
    arrays["y_test"] = np.zeros((4, 2), np.uint8)
    write_idx_dir(tmp_path, arrays)
    with pytest.raises(SanityError) as excinfo:
        load_dataset("mnist", "idx", path=str(tmp_path), log=lambda line: None)
    assert_one_line_error(excinfo, "t10k-labels-idx1-ubyte.gz has shape (4,2), expected (N,)")


def test_idx_count_mismatch_and_label_range(tmp_path):
    arrays = tiny_arrays()
    arrays["y_train"] = arrays["y_train"][:-1]
    write_idx_dir(tmp_path / "a", arrays)
    with pytest.raises(SanityError) as excinfo:
        load_dataset("mnist", "idx", path=str(tmp_path / "a"), log=lambda line: None)
    assert_one_line_error(excinfo, "has 11 labels but", "has 12 images")

    arrays = tiny_arrays()
    arrays["y_test"][0] = 10
    write_idx_dir(tmp_path / "b", arrays)
    with pytest.raises(SanityError) as excinfo:
        load_dataset("mnist", "idx", path=str(tmp_path / "b"), log=lambda line: None)
    assert_one_line_error(excinfo, "t10k-labels-idx1-ubyte.gz", "expected 0..9")


def test_idx_missing_files(tmp_path):
    write_idx_dir(tmp_path / "partial", tiny_arrays(), skip=("x_test",))
    with pytest.raises(SanityError) as excinfo:
        load_dataset("mnist", "idx", path=str(tmp_path / "partial"), log=lambda line: None)
    msg = assert_one_line_error(excinfo, "missing t10k-images-idx3-ubyte[.gz]")
    assert msg.index("missing") < msg.index("t10k-images") and "train-images-idx3-ubyte[.gz]" in msg  # lists expected

    (tmp_path / "empty").mkdir()
    with pytest.raises(SanityError) as excinfo:
        load_dataset("mnist", "idx", path=str(tmp_path / "empty"), log=lambda line: None)
    assert_one_line_error(excinfo, "missing train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]")


def test_idx_bad_path(tmp_path):
    with pytest.raises(SanityError) as excinfo:
        load_dataset("mnist", "idx", path=str(tmp_path / "nowhere"), log=lambda line: None)
    assert_one_line_error(excinfo, "does not exist", "data.path")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SanityError) as excinfo:
        load_dataset("mnist", "idx", path=str(tmp_path / "file"), log=lambda line: None)
    assert_one_line_error(excinfo, "is not a directory")
    with pytest.raises(SanityError) as excinfo:
        load_dataset("mnist", "idx", path=None, log=lambda line: None)
    assert_one_line_error(excinfo, "data.source=idx needs data.path=DIR")


def test_unknown_name_and_source():
    with pytest.raises(SanityError) as excinfo:
        load_dataset("cifar10", log=lambda line: None)
    assert_one_line_error(excinfo, "'cifar10'", "mnist", "fashion_mnist")
    with pytest.raises(SanityError) as excinfo:
        load_dataset("mnist", "http", log=lambda line: None)
    assert_one_line_error(excinfo, "'http'", "auto", "tfds", "idx", "bundled")


# ------------------------------------------------------------------------------------- bundled


def test_bundled_mnist(real_mnist):
    lines = Lines()
    ds = load_dataset("mnist", "bundled", log=lines)
    assert lines == ["data: mnist from bundled subset (4000 train / 1000 test images)"]
    assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    np.testing.assert_array_equal(ds.y_train, real_mnist.y_train[:4000])
    np.testing.assert_array_equal(ds.y_test, real_mnist.y_test[:1000])
    np.testing.assert_array_equal(ds.x_train, real_mnist.x_train[:4000])
    np.testing.assert_array_equal(ds.x_test, real_mnist.x_test[:1000])
    prov = ds.provenance
    json.dumps(prov)
    assert prov["source"] == "bundled" and prov["n_train"] == 4000 and prov["n_test"] == 1000
    assert prov["sha256"]["mnist_subset.npz"] == hashlib.sha256(data.BUNDLED_MNIST.read_bytes()).hexdigest()
    assert data.BUNDLED_MNIST.stat().st_size < 3_000_000
    assert (data.BUNDLED_MNIST.parent / "README.md").is_file()


def test_bundled_fashion_mnist_is_an_error():
    with pytest.raises(SanityError) as excinfo:
        load_dataset("fashion_mnist", "bundled", log=lambda line: None)
    assert_one_line_error(excinfo, "Fashion-MNIST has no bundled copy", "data.source=idx data.path=DIR", "tfds")


# ---------------------------------------------------------------------------------- auto / tfds


def test_auto_offline_mnist_falls_back_to_bundled(tmp_path, offline):
    lines = Lines()
    start = time.monotonic()
    ds = load_dataset("mnist", data_dir=str(tmp_path / "tfds"), log=lines)
    assert time.monotonic() - start < 5
    assert ds.provenance["source"] == "bundled" and ds.provenance["requested_source"] == "auto"
    assert ds.x_train.shape == (4000, 28, 28, 1)
    assert len(lines) == 1 and lines[0].startswith("data: mnist from bundled subset (4000 train / 1000 test images)")
    assert offline and offline[0][0] == "storage.googleapis.com"


def test_auto_offline_fashion_mnist_is_an_error(tmp_path, offline):
    start = time.monotonic()
    with pytest.raises(SanityError) as excinfo:
        load_dataset("fashion_mnist", data_dir=str(tmp_path / "tfds"), log=lambda line: None)
    assert time.monotonic() - start < 5
    assert_one_line_error(excinfo, "no bundled copy", "data.source=idx data.path=DIR", "tfds")


def test_tfds_not_prepared_offline_fails_fast(tmp_path, offline):
    start = time.monotonic()
    with pytest.raises(SanityError) as excinfo:
        load_dataset("mnist", "tfds", data_dir=str(tmp_path / "tfds"), log=lambda line: None)
    assert time.monotonic() - start < 5
    assert_one_line_error(excinfo, "tfds: 'mnist' is not prepared in", str(tmp_path / "tfds"), "unreachable",
                          "data.source=bundled", "data.source=idx data.path=DIR")


def test_probe_real_socket_is_bounded():
    # a closed local port: refused at once, no DNS or network involved
    start = time.monotonic()
    assert data._server_reachable("127.0.0.1", 9, 0.5) is False
    assert data._server_reachable("127.0.0.1", 9, 0) is False
    assert time.monotonic() - start < 2


@pytest.fixture
def prepared_tfds_mnist(tmp_path, monkeypatch):
    """A really prepared tfds 'mnist' in tmp_path, made by tfds's own MNIST builder from tiny local files."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.image_classification import mnist as tfds_mnist

    arrays = tiny_arrays(n_train=20, n_test=5, seed=3)
    raw_dir = tmp_path / "raw"
    files = write_idx_dir(raw_dir, arrays, gz=False)  # download_and_extract would have gunzipped them
    local = {
        "train_data": str(files["x_train"]),
        "train_labels": str(files["y_train"]),
        "test_data": str(files["x_test"]),
        "test_labels": str(files["y_test"]),
    }
    with monkeypatch.context() as patch:
        patch.setattr(tfds_mnist, "_TRAIN_EXAMPLES", 20)
        patch.setattr(tfds_mnist, "_TEST_EXAMPLES", 5)
        patch.setattr(tfds.download.DownloadManager, "download_and_extract", lambda self, urls: local)
        builder = tfds.builder("mnist", data_dir=str(tmp_path / "tfds"))
        builder.download_and_prepare(download_dir=str(tmp_path / "downloads"))
    assert (Path(builder.data_dir) / "dataset_info.json").is_file()
    return tfds, tmp_path / "tfds", arrays


def _pairs(x: np.ndarray, y: np.ndarray) -> list:
    return sorted((img.tobytes(), int(label)) for img, label in zip(x, y))


@pytest.mark.parametrize("source", ["tfds", "auto"])
def test_tfds_prepared_loads_without_download(prepared_tfds_mnist, monkeypatch, offline, source):
    tfds, data_dir, arrays = prepared_tfds_mnist

    def forbidden(*args, **kwargs):
        raise AssertionError("a prepared dataset must load without downloading")

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", forbidden)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", forbidden)
    lines = Lines()
    ds = load_dataset("mnist", source, data_dir=str(data_dir), log=lines)
    assert offline == []  # prepared: not even the probe runs
    assert ds.x_train.shape == (20, 28, 28, 1) and ds.x_test.shape == (5, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    # tfds shuffles examples when it writes them: compare (image, label) pairs as multisets
    back = lambda x: np.rint(x[..., 0] * 255).astype(np.uint8)  # noqa: E731
    assert _pairs(back(ds.x_train), ds.y_train) == _pairs(arrays["x_train"], arrays["y_train"])
    assert _pairs(back(ds.x_test), ds.y_test) == _pairs(arrays["x_test"], arrays["y_test"])
    prov = ds.provenance
    json.dumps(prov)
    assert prov["source"] == "tfds" and prov["data_dir"] == str(data_dir) and prov["downloaded"] is False
    assert prov["tfds_version"] == tfds.__version__ and prov["builder_version"] == "3.0.1"
    assert prov["n_train"] == 20 and prov["n_test"] == 5
    assert lines == [f"data: mnist from tfds 3.0.1 in {data_dir} (20 train / 5 test images)"]


# ------------------------------------------------------------------------ permutation, fingerprint


def test_permute_labels():
    labels = np.random.default_rng(0).integers(0, 10, 5000).astype(np.int64)
    original = labels.copy()
    p1 = permute_labels(labels, seed=1)
    np.testing.assert_array_equal(labels, original)  # input untouched
    assert p1.shape == labels.shape and p1.dtype == labels.dtype
    np.testing.assert_array_equal(np.sort(p1), np.sort(labels))
    np.testing.assert_array_equal(np.bincount(p1, minlength=10), np.bincount(labels, minlength=10))
    assert (p1 != labels).mean() > 0.8  # ~90% for 10 balanced-ish classes
    np.testing.assert_array_equal(p1, permute_labels(labels, seed=1))
    p2 = permute_labels(labels, seed=2)
    assert (p1 != p2).mean() > 0.8
    with pytest.raises(SanityError):
        permute_labels(labels.reshape(50, 100), seed=1)


def test_fingerprint(tmp_path):
    write_idx_dir(tmp_path / "d", tiny_arrays())
    a = load_dataset("mnist", "idx", path=str(tmp_path / "d"), log=lambda line: None)
    b = load_dataset("mnist", "idx", path=str(tmp_path / "d"), log=lambda line: None)
    fa = fingerprint(a)
    assert fa == fingerprint(b) and len(fa) == 16 and int(fa, 16) >= 0
    b.y_train = permute_labels(b.y_train, seed=0)
    assert fingerprint(b) != fa
    c = load_dataset("fashion_mnist", "idx", path=str(tmp_path / "d"), log=lambda line: None)
    assert fingerprint(c) != fa


def test_any_prepared_tfds_image_data_set_loads_offline(prepared_tfds_mnist, monkeypatch, offline):
    """data=tfds data.name=NAME: the generic loader reads a prepared data set's (image, label) arrays with its
    class names, without the network; a missing split names the ones there are."""
    tfds, data_dir, arrays = prepared_tfds_mnist
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("no download")))
    lines = Lines()
    ds = data.load_tfds_images("mnist", str(data_dir), log=lines)
    assert offline == []
    assert ds.name == "mnist" and ds.x_test.shape == (5, 28, 28, 1) and ds.x_train.shape == (20, 28, 28, 1)
    assert ds.class_names == [str(k) for k in range(10)] and ds.provenance["splits"] == {"train": "train",
                                                                                           "test": "test"}
    back = lambda x: np.rint(x[..., 0] * 255).astype(np.uint8)  # noqa: E731
    assert _pairs(back(ds.x_test), ds.y_test) == _pairs(arrays["x_test"], arrays["y_test"])
    with pytest.raises(SanityError) as excinfo:
        data.load_tfds_images("mnist", str(data_dir), test_split="validation", log=lines)
    assert_one_line_error(excinfo, "has no split 'validation'", "train, test")
