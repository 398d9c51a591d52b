"""Datasets for the sanity checks: MNIST and Fashion-MNIST from tfds, IDX files, or a bundled MNIST subset.

Every loader returns a :class:`Dataset` with float32 images of shape (N, 28, 28, 1) scaled to [0, 1],
int64 labels and a JSON-serialisable ``provenance`` record (what was read, from where, file hashes,
license).

Sources (``data.source``):

``idx``      a directory (``data.path``) with the four standard IDX files, gzip or uncompressed.
``bundled``  the first 4000 train / 1000 test images of real MNIST, shipped in ``sanity_cli/bundled``.
``tfds``     tensorflow-datasets in ``data.data_dir``; a prepared copy is loaded without any network
             access. tfds retries unreachable downloads for minutes, so before downloading we probe the
             download server with a short TCP connect and fail fast when offline.
``auto``     ``idx`` if ``data.path`` is set; else tfds if prepared or the server is reachable; else the
             bundled subset (MNIST only).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import socket
import threading
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import numpy as np

from sanity_cli import seeds
from sanity_cli.errors import SanityError, one_line
from sanity_cli.io import sha256_file

DATASET_NAMES = ("mnist", "fashion_mnist")
SOURCES = ("auto", "tfds", "idx", "bundled")

MNIST_CLASS_NAMES = [str(d) for d in range(10)]
FASHION_MNIST_CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CLASS_NAMES = {"mnist": MNIST_CLASS_NAMES, "fashion_mnist": FASHION_MNIST_CLASS_NAMES}
LICENSES = {
    "mnist": "CC BY-SA 3.0 (MNIST: Yann LeCun, Corinna Cortes, Christopher J.C. Burges)",
    "fashion_mnist": "MIT (Fashion-MNIST: Zalando Research; Han Xiao, Kashif Rasul, Roland Vollgraf)",
}

# Array key -> standard IDX file name (without .gz). Fashion-MNIST uses the same names.
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

BUNDLED_MNIST = Path(__file__).resolve().parent / "bundled" / "mnist_subset.npz"

# Download servers of the tfds builders (used only for the reachability probe).
_DEFAULT_DOWNLOAD_HOST = ("storage.googleapis.com", 443)

_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_FIX_OFFLINE = "use data.source=bundled (MNIST) or data.source=idx data.path=DIR"


def _fix_offline(name: str) -> str:
    if name == "mnist":
        return _FIX_OFFLINE
    return "use data.source=idx data.path=DIR (a directory with the Fashion-MNIST IDX files)"


@dataclass
class Dataset:
    name: str  # "mnist" or "fashion_mnist"
    x_train: np.ndarray  # float32 (N, 28, 28, 1) in [0, 1]
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    provenance: dict


# --------------------------------------------------------------------------------------------------
# IDX files


def _why(exc: BaseException) -> str:
    """An exception's type and first line, for an error message's parenthesis."""
    return one_line(exc, first_line=True, with_type=True)


def _read_idx_with_hash(path) -> tuple[np.ndarray, str]:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SanityError(f"IDX file {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise SanityError(f"IDX file {path} is a directory; pass the path of an IDX(.gz) file") from None
    except OSError as exc:
        raise SanityError(f"cannot read IDX file {path} ({_why(exc)}); check its permissions") from None
    digest = hashlib.sha256(raw).hexdigest()

    if raw[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise SanityError(
                f"{path} is a corrupt or truncated gzip file ({_why(exc)}); re-download it"
            ) from None
    else:
        data = raw

    if len(data) < 4:
        raise SanityError(f"{path} is truncated ({len(data)} bytes, no IDX header); re-download it")
    zero, code, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise SanityError(
            f"{path} has bad IDX magic 0x{data[:4].hex()} (expected 0x000008NN: 2 zero bytes, a type code, "
            "the number of dimensions); it is not an IDX file, point data.path at the MNIST IDX files"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SanityError(f"{path} is truncated inside its IDX header ({len(data)} bytes); re-download it")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    body = len(data) - header
    if body < expected:
        raise SanityError(
            f"{path} is truncated: header says shape {dims} ({expected} bytes of data) but only {body} "
            "bytes follow; re-download it"
        )
    if body > expected:
        raise SanityError(
            f"{path} has {body - expected} unexpected bytes after the data of shape {dims}; "
            "the file is corrupt, re-download it"
        )
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True), digest


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw; detected from the content) into a native-endian array.

    Raises SanityError on a missing file, bad magic, truncation or trailing bytes.
    """
    return _read_idx_with_hash(path)[0]


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    """The file for ``stem`` in ``directory``: ``stem.gz`` or ``stem`` (also ``train-images.idx3-ubyte``)."""
    dotted = stem.replace("-idx", ".idx")
    for candidate in (stem + ".gz", stem, dotted + ".gz", dotted):
        path = Path(directory) / candidate
        if path.is_file():
            return path
    return None


def _expected_idx_names() -> str:
    return ", ".join(f"{stem}[.gz]" for stem in IDX_FILES.values())


def _load_idx(name: str, path) -> tuple[dict, dict]:
    if path is None or str(path).strip() == "":
        raise SanityError(
            f"data.source=idx needs data.path=DIR, a directory with {_expected_idx_names()}"
        )
    directory = Path(path).expanduser()
    if not directory.exists():
        raise SanityError(
            f"data.path {directory} does not exist; set data.path to a directory with {_expected_idx_names()}"
        )
    if not directory.is_dir():
        raise SanityError(
            f"data.path {directory} is not a directory; set data.path to a directory with {_expected_idx_names()}"
        )
    found = {key: _find_idx_file(directory, stem) for key, stem in IDX_FILES.items()}
    missing = [f"{IDX_FILES[key]}[.gz]" for key, p in found.items() if p is None]
    if missing:
        raise SanityError(
            f"data.path {directory} is missing {', '.join(missing)}; it must hold the four files "
            f"{_expected_idx_names()} (gzip or uncompressed)"
        )

    arrays, hashes = {}, {}
    for key, file in found.items():
        arr, digest = _read_idx_with_hash(file)
        hashes[file.name] = digest
        if key.startswith("x"):
            if arr.ndim != 3 or arr.shape[1:] != (28, 28):
                raise SanityError(
                    f"{file} has shape {_shape_str(arr.shape)}, expected (N,28,28); "
                    "data.path must hold 28x28 MNIST-format images"
                )
            if arr.dtype != np.uint8:
                raise SanityError(f"{file} holds {arr.dtype} pixels, expected uint8; use the original IDX files")
        else:
            if arr.ndim != 1:
                raise SanityError(
                    f"{file} has shape {_shape_str(arr.shape)}, expected (N,) labels; use the original IDX label file"
                )
            if not np.issubdtype(arr.dtype, np.integer):
                raise SanityError(f"{file} holds {arr.dtype} labels, expected integers; use the original IDX label "
                                  f"file")
        arrays[key] = arr

    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        x_name, y_name = found[f"x_{split}"].name, found[f"y_{split}"].name
        if len(x) == 0:
            raise SanityError(f"{x_name} in {directory} holds no images; use the full IDX files")
        if len(x) != len(y):
            raise SanityError(
                f"{y_name} has {len(y)} labels but {x_name} has {len(x)} images in {directory}; "
                "the image and label files must belong together"
            )
        if y.min() < 0 or y.max() > 9:
            raise SanityError(
                f"{y_name} has labels in {int(y.min())}..{int(y.max())}, expected 0..9; "
                "use the MNIST/Fashion-MNIST label files"
            )
    provenance = {"path": str(directory.resolve()), "files": {k: str(v.name) for k, v in found.items()},
                  "sha256": hashes}
    return arrays, provenance


def _shape_str(shape) -> str:
    return "(" + ",".join(str(int(d)) for d in shape) + ")"


# --------------------------------------------------------------------------------------------------
# bundled subset


def _load_bundled(name: str) -> tuple[dict, dict]:
    if name != "mnist":
        raise SanityError(
            f"{name}: Fashion-MNIST has no bundled copy (only MNIST does); use data.source=idx data.path=DIR "
            "with the Fashion-MNIST IDX files, or data.source=tfds"
        )
    file = BUNDLED_MNIST
    if not file.is_file():
        raise SanityError(
            f"bundled MNIST subset {file} is missing from this installation; reinstall sanity-cli "
            "or use data.source=idx data.path=DIR"
        )
    raw = file.read_bytes()
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {key: np.asarray(npz[key]) for key in IDX_FILES}
    except Exception as exc:  # corrupt zip, missing key
        raise SanityError(
            f"bundled MNIST subset {file} is unreadable ({_why(exc)}); reinstall sanity-cli "
            "or use data.source=idx data.path=DIR"
        ) from None
    provenance = {"path": str(file), "sha256": {file.name: hashlib.sha256(raw).hexdigest()}}
    return arrays, provenance


# --------------------------------------------------------------------------------------------------
# tensorflow-datasets


def _import_tfds():
    try:
        import tensorflow_datasets as tfds  # slow import: only when needed
    except ImportError as exc:  # e.g. importlib_resources missing on Python 3.11
        raise SanityError(
            f"tfds: cannot import tensorflow_datasets ({_why(exc)}); "
            f"pip install tensorflow-datasets importlib_resources, or {_FIX_OFFLINE}"
        ) from None
    return tfds


def _tfds_builder(tfds, name: str, data_dir):
    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception as exc:
        raise SanityError(
            f"tfds: cannot create the {name!r} builder in {data_dir or 'the tfds default data dir'} "
            f"({_why(exc)}); fix data.data_dir or {_fix_offline(name)}"
        ) from None


def _tfds_is_prepared(builder) -> bool:
    """True if the builder's versioned data dir holds a prepared dataset (no network involved).

    In tfds 4.9.x ``builder.is_prepared()`` checks ``<data_dir>/<name>/<version>`` for
    ``dataset_info.json`` and ``features.json``; it logs a warning when they are absent, so we look
    for ``dataset_info.json`` first and only then ask tfds.
    """
    if not (Path(builder.data_dir) / "dataset_info.json").is_file():
        return False
    is_prepared = getattr(builder, "is_prepared", None)
    return bool(is_prepared()) if callable(is_prepared) else True


def _download_host(builder) -> tuple[str, int]:
    url = getattr(builder, "URL", None)
    if isinstance(url, str) and url:
        parsed = urlparse(url)
        if parsed.hostname:
            return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    return _DEFAULT_DOWNLOAD_HOST


def _server_reachable(host: str, port: int, timeout: float) -> bool:
    """Quick TCP connect to the download server; bounded by ``timeout`` (DNS included, via a thread)."""
    if timeout is None or timeout <= 0:
        return False
    result: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, name="sanity-data-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _tfds_dir_label(builder) -> str:
    return str(getattr(builder, "data_dir_root", None) or Path(builder.data_dir).parents[1])


def _tfds_as_arrays(tfds, builder, name: str) -> dict:
    try:
        train, test = tfds.as_numpy(
            builder.as_dataset(split=["train", "test"], as_supervised=True, batch_size=-1)
        )
    except Exception as exc:
        raise SanityError(
            f"tfds: cannot read the prepared {name!r} in {builder.data_dir} ({_why(exc)}); "
            f"delete that directory to re-prepare it, or {_fix_offline(name)}"
        ) from None
    arrays = {"x_train": train[0], "y_train": train[1], "x_test": test[0], "y_test": test[1]}
    for key in ("x_train", "x_test"):
        arr = arrays[key]
        if arr.ndim == 4 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 3 or arr.shape[1:] != (28, 28):
            raise SanityError(
                f"tfds: {name!r} in {builder.data_dir} has {key} of shape {_shape_str(arrays[key].shape)}, "
                f"expected (N,28,28,1); delete that directory to re-prepare it, or {_fix_offline(name)}"
            )
        arrays[key] = arr
    return arrays


def _tfds_provenance(tfds, builder, downloaded: bool) -> dict:
    return {
        "data_dir": _tfds_dir_label(builder),
        "dataset_dir": str(builder.data_dir),
        "tfds_version": str(getattr(tfds, "__version__", "unknown")),
        "builder_version": str(builder.version),
        "downloaded": downloaded,
    }


def _prepare(builder, name: str, probe_timeout: float, fix: str) -> bool:
    """Make sure the builder's data set is prepared: as it is, or downloaded when its server answers within
    probe_timeout s. Returns whether it was downloaded; `fix` ends the one-line error otherwise."""
    if _tfds_is_prepared(builder):
        return False
    host, port = _download_host(builder)
    if not _server_reachable(host, port, probe_timeout):
        raise SanityError(
            f"tfds: {name!r} is not prepared in {_tfds_dir_label(builder)} and the download server "
            f"{host} is unreachable (offline?); {fix}"
        )
    try:
        builder.download_and_prepare()
    except Exception as exc:
        raise SanityError(
            f"tfds: downloading and preparing {name!r} into {_tfds_dir_label(builder)} failed "
            f"({_why(exc)}); {fix}"
        ) from None
    return True


def _load_tfds(name: str, data_dir, probe_timeout: float, *, tfds=None, builder=None) -> tuple[dict, dict]:
    tfds = tfds or _import_tfds()
    builder = builder or _tfds_builder(tfds, name, data_dir)
    downloaded = _prepare(builder, name, probe_timeout, _fix_offline(name))
    return _tfds_as_arrays(tfds, builder, name), _tfds_provenance(tfds, builder, downloaded)


# --------------------------------------------------------------------------------------------------
# public entry point


def _finish(name: str, source: str, arrays: dict, provenance: dict) -> Dataset:
    x_train = _to_float_images(arrays["x_train"])
    x_test = _to_float_images(arrays["x_test"])
    y_train = np.asarray(arrays["y_train"]).astype(np.int64)
    y_test = np.asarray(arrays["y_test"]).astype(np.int64)
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise SanityError(
                f"{source}: {name} {split} split has {len(x)} images but {len(y)} labels; the data is corrupt, "
                "re-create it"
            )
    record = {
        "source": source,
        "name": name,
        **provenance,
        "n_train": int(len(x_train)),
        "n_test": int(len(x_test)),
        "license": LICENSES[name],
    }
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=list(CLASS_NAMES[name]),
        provenance=record,
    )


def _to_float_images(x: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) or (N, 28, 28, 1) -> float32 (N, 28, 28, 1) in [0, 1]."""
    x = np.asarray(x, dtype=np.uint8)
    if x.ndim == 3:
        x = x[..., None]
    out = x.astype(np.float32)
    out /= np.float32(255.0)
    return out


def _describe(ds: Dataset) -> str:
    p = ds.provenance
    counts = f"{p['n_train']} train / {p['n_test']} test images"
    if p["source"] == "bundled":
        return f"data: {ds.name} from bundled subset ({counts})"
    if p["source"] == "idx":
        return f"data: {ds.name} from IDX files in {p['path']} ({counts})"
    return f"data: {ds.name} from tfds {p['builder_version']} in {p['data_dir']} ({counts})"


def load_dataset(
    name: str,
    source: str = "auto",
    path: str | None = None,
    data_dir: str | None = None,
    probe_timeout: float = 2.0,
    log: Callable[[str], object] = print,
) -> Dataset:
    """Load MNIST or Fashion-MNIST from ``source`` and log one line saying what was loaded.

    ``path`` is the IDX directory (source idx; with source auto it selects idx), ``data_dir`` the tfds
    data dir (None = tfds default), ``probe_timeout`` the seconds allowed for the download-server
    probe before tfds may download (<= 0: never download). Raises SanityError with a one-line message.
    """
    if name not in DATASET_NAMES:
        raise SanityError(f"unknown dataset {name!r}; choose data.name from {', '.join(DATASET_NAMES)}")
    if source not in SOURCES:
        raise SanityError(f"unknown data source {source!r}; choose data.source from {', '.join(SOURCES)}")
    if data_dir is not None:
        data_dir = str(Path(data_dir).expanduser()) if str(data_dir).strip() else None
    if path is not None and not str(path).strip():
        path = None

    note = ""
    if source == "idx" or (source == "auto" and path is not None):
        arrays, prov = _load_idx(name, path)
        chosen = "idx"
    elif source == "bundled":
        arrays, prov = _load_bundled(name)
        chosen = "bundled"
    elif source == "tfds":
        arrays, prov = _load_tfds(name, data_dir, probe_timeout)
        chosen = "tfds"
    else:  # auto without a path: tfds if prepared or reachable, else the bundled subset (MNIST only)
        arrays, prov, chosen, note = _load_auto(name, data_dir, probe_timeout)

    ds = _finish(name, chosen, arrays, prov)
    if source == "auto":
        ds.provenance["requested_source"] = "auto"
        if note:
            ds.provenance["auto_note"] = note
    log(_describe(ds) + (f"; auto: {note}" if note else ""))
    return ds


def _load_auto(name: str, data_dir, probe_timeout: float) -> tuple[dict, dict, str, str]:
    try:
        tfds = _import_tfds()
        builder = _tfds_builder(tfds, name, data_dir)
    except SanityError as exc:
        reason = str(exc).split(";")[0].removeprefix("tfds: ")
    else:
        where = _tfds_dir_label(builder)
        if _tfds_is_prepared(builder):
            arrays, prov = _load_tfds(name, data_dir, probe_timeout, tfds=tfds, builder=builder)
            return arrays, prov, "tfds", ""
        host, port = _download_host(builder)
        if _server_reachable(host, port, probe_timeout):
            try:
                arrays, prov = _load_tfds(name, data_dir, probe_timeout, tfds=tfds, builder=builder)
                return arrays, prov, "tfds", ""
            except SanityError as exc:
                reason = str(exc).split(";")[0].removeprefix("tfds: ")
        else:
            reason = f"no prepared tfds copy in {where} and {host} unreachable"
    if name == "mnist":
        arrays, prov = _load_bundled(name)
        return arrays, prov, "bundled", reason
    raise SanityError(
        f"{name}: {reason} and Fashion-MNIST has no bundled copy; use data.source=idx data.path=DIR "
        "with the Fashion-MNIST IDX files, or prepare it with tfds (online once) into data.data_dir"
    )


# --------------------------------------------------------------------------------------------------
# helpers for the tests


def permute_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded random permutation of ``labels`` (same multiset, so the same class histogram).

    Deterministic per seed (numpy PCG64 via ``default_rng(seed)``); the input is not modified.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise SanityError(f"permute_labels needs 1-D labels, got shape {_shape_str(labels.shape)}; pass y_train")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SanityError(f"label permutation seed must be a non-negative integer, got {seed!r}; fix the seed")
    return seeds.label_rng(seed).permutation(labels)


def fingerprint(ds: Dataset) -> str:
    """Short (16 hex digits) sha256 of the dataset name and arrays (dtype, shape, bytes); stable across runs."""
    h = hashlib.sha256()
    h.update(f"sanity_cli.data/1:{ds.name}".encode())
    for key in ("x_train", "y_train", "x_test", "y_test"):
        arr = np.ascontiguousarray(getattr(ds, key))
        h.update(f"|{key}:{arr.dtype.str}:{arr.shape}|".encode())
        if arr.size:
            h.update(memoryview(arr).cast("B"))
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# your own arrays (data=npz)

def _npz_images(x: np.ndarray, key: str, path) -> np.ndarray:
    """uint8 images -> [0, 1] (x / 255); floating images must already lie in [0, 1]; (N, H, W) gets a channel."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise SanityError(f"{path}: {key} has shape {_shape_str(x.shape)}; images must be (N, height, width[, "
                          f"channels])")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise SanityError(f"{path}: {key} has dtype {x.dtype}; save images as uint8 (0-255) or floats in [0, 1]")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        bad = np.unique(np.nonzero(~np.isfinite(x).reshape(len(x), -1))[0])
        raise SanityError(f"{path}: {key} holds NaN or infinite pixels (images {bad[:5].tolist()}"
                          f"{', ...' if len(bad) > 5 else ''}); replace them before saving")
    if x.min(initial=0.0) < 0.0 or x.max(initial=0.0) > 1.0:
        raise SanityError(f"{path}: {key} holds values outside [0, 1] (min {np.nanmin(x):.3g}, max "
                          f"{np.nanmax(x):.3g}); save images as uint8 (0-255) or floats in [0, 1] (the model's "
                          f"own scaling is model.input_range / model.preprocess)")
    return x


def load_npz(path, log: Callable[[str], object] = print) -> Dataset:
    """`data=npz data.path=FILE`: arrays x_test, y_test (needed) and x_train, y_train (needed when a model is
    trained: the data test), any image size and channel count; optional class_names."""
    if not path:
        raise SanityError("data=npz needs the arrays file: data.path=FILE.npz (x_test, y_test[, x_train, y_train])")
    file = Path(str(path)).expanduser()
    if file.is_file() and not zipfile.is_zipfile(file):
        raise SanityError(f"data.path {file} is not a numpy .npz archive (not a zip file); save it with "
                          f"np.savez(path, x_test=..., y_test=...)")
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise SanityError(f"data.path {file} does not exist; give the .npz file") from None
    except (OSError, ValueError) as err:
        raise SanityError(f"data.path {file} is not a numpy .npz archive "
                          f"({_why(err)}); save it with "
                          f"np.savez(path, x_test=..., y_test=...)") from None
    ds = from_arrays(arrays, str(file), {"source": "npz", "name": "npz", "path": str(file.resolve()),
                                         "sha256": sha256_file(file)})
    log(f"data: {file} ({len(ds.x_test)} test images {tuple(ds.x_test.shape[1:])}, {len(ds.x_train)} training "
        f"images, {len(ds.class_names)} classes)")
    return ds


def from_arrays(arrays: dict, label: str, provenance: dict, name: str = "npz") -> Dataset:
    """A Dataset from arrays x_test, y_test (and x_train, y_train; optional class_names), as data=npz holds them
    and check() is given them: images (N, H, W[, C]) as uint8 0-255 or floats in [0, 1]. `label` names their
    origin in error messages."""
    missing = [key for key in ("x_test", "y_test") if key not in arrays]
    if missing:
        raise SanityError(f"{label} has no {' and no '.join(missing)} (it has {', '.join(arrays) or 'nothing'}); "
                          f"save x_test, y_test (and x_train, y_train for test=data)")
    x_test = _npz_images(arrays["x_test"], "x_test", label)
    has_train = "x_train" in arrays and "y_train" in arrays
    x_train = _npz_images(arrays["x_train"], "x_train", label) if has_train else x_test[:0]
    splits = {"train": (x_train, arrays.get("y_train", np.zeros(0, np.int64))), "test": (x_test, arrays["y_test"])}
    labels = {}
    for split, (x, y) in splits.items():
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise SanityError(f"{label}: y_{split} must hold one class index >= 0 per image of x_{split} "
                              f"({len(x)}), got shape {_shape_str(y.shape)} dtype {y.dtype}")
        labels[split] = y.astype(np.int64)
    if has_train and x_train.shape[1:] != x_test.shape[1:]:
        raise SanityError(f"{label}: x_train images are {x_train.shape[1:]} but x_test images {x_test.shape[1:]}")
    classes = int(max(labels["test"].max(initial=0), labels["train"].max(initial=0))) + 1
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else [str(k) for k in range(classes)]
    return Dataset(name=name, x_train=x_train, y_train=labels["train"], x_test=x_test, y_test=labels["test"],
                   class_names=names, provenance={**provenance, "n_train": int(len(x_train)),
                                                  "n_test": int(len(x_test))})


# --------------------------------------------------------------------------------------------------
# any tfds image-classification data set (data=tfds data.name=NAME)

def load_tfds_images(name: str, data_dir=None, train_split: str = "train", test_split: str = "test",
                     probe_timeout: float = 2.0, log: Callable[[str], object] = print) -> Dataset:
    """A tfds image-classification data set prepared in `data_dir` (offline), or downloaded when its server
    answers within `probe_timeout` s: (image, label) pairs of the two splits as arrays in [0, 1]. Images of
    varying sizes cannot be stacked: use data=folder for those."""
    if not name:
        raise SanityError("data=tfds needs the data set's tfds name: data.name=NAME (e.g. cifar10)")
    tfds = _import_tfds()
    if data_dir is not None:
        data_dir = str(Path(data_dir).expanduser())
    builder = _tfds_builder(tfds, name, data_dir)
    downloaded = _prepare(builder, name, probe_timeout, "prepare it there or set data.data_dir")
    splits = list(builder.info.splits)
    for split in (train_split, test_split):
        if split and split not in splits:
            raise SanityError(f"tfds: {name!r} has no split {split!r}; it has {', '.join(splits)} "
                              f"(data.train_split, data.test_split)")
    wanted = [test_split] + ([train_split] if train_split else [])
    try:
        parts = tfds.as_numpy(builder.as_dataset(split=wanted, as_supervised=True, batch_size=-1))
    except Exception as exc:
        raise SanityError(f"tfds: cannot read {name!r} as (image, label) arrays ({_why(exc)}); images of "
                          f"varying sizes need data=folder") from None
    arrays = {}
    for split, (x, y) in zip(("test", "train"), parts):
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise SanityError(f"tfds: {name!r} {split} images have shape {_shape_str(x.shape)}, not (N, H, W, C)")
        arrays[f"x_{split}"] = x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x.astype(
            np.float32)
        arrays[f"y_{split}"] = np.asarray(y).astype(np.int64)
    if "x_train" not in arrays:
        arrays["x_train"] = arrays["x_test"][:0]
        arrays["y_train"] = np.zeros(0, np.int64)
    label = builder.info.features["label"] if "label" in builder.info.features else None
    class_names = list(getattr(label, "names", None) or [str(k) for k in range(int(arrays["y_test"].max()) + 1)])
    ds = Dataset(name=name, x_train=arrays["x_train"], y_train=arrays["y_train"], x_test=arrays["x_test"],
                 y_test=arrays["y_test"], class_names=class_names,
                 provenance={"source": "tfds", "name": name, **_tfds_provenance(tfds, builder, downloaded),
                             "splits": {"train": train_split, "test": test_split},
                             "n_train": int(len(arrays["x_train"])), "n_test": int(len(arrays["x_test"]))})
    log(f"data: tfds {name!r} ({len(ds.x_test)} {test_split} images {tuple(ds.x_test.shape[1:])}, "
        f"{len(ds.x_train)} {train_split or 'no'} training images, {len(class_names)} classes)")
    return ds
