#!/usr/bin/env python
"""Build ``sanity_cli/bundled/mnist_subset.npz``: a small real MNIST subset shipped inside the package.

Takes the first 4000 training and the first 1000 test images (and their labels), in file order,
from the four standard MNIST IDX files and stores them as uint8 with ``np.savez_compressed``:

    x_train (4000, 28, 28) uint8    y_train (4000,) uint8
    x_test  (1000, 28, 28) uint8    y_test  (1000,) uint8

Usage (from the project root):

    python scripts/make_bundled_mnist.py [--src ../shared/data/mnist] [--out sanity_cli/bundled/mnist_subset.npz]

The output is deterministic for the same input files (fixed zip timestamps), so re-running it
does not change the file. MNIST: Yann LeCun, Corinna Cortes, Christopher J.C. Burges; CC BY-SA 3.0.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sanity_cli.data import IDX_FILES, _find_idx_file, read_idx  # noqa: E402

N_TRAIN = 4000
N_TEST = 1000
DEFAULT_SRC = ROOT.parent / "shared" / "data" / "mnist"
DEFAULT_OUT = ROOT / "sanity_cli" / "bundled" / "mnist_subset.npz"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _savez_deterministic(out: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed, but with a fixed timestamp per member so the bytes are reproducible."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue(), compresslevel=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="directory with the four MNIST IDX(.gz) files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    arrays = {}
    for key, stem in IDX_FILES.items():
        path = _find_idx_file(args.src, stem)
        if path is None:
            parser.error(f"{args.src}: missing {stem}[.gz]")
        arr = read_idx(path)
        n = N_TRAIN if key.endswith("train") else N_TEST
        arrays[key] = np.ascontiguousarray(arr[:n]).astype(np.uint8)
        print(f"{path.name}: sha256 {_sha256(path)} shape {arr.shape} -> first {n}")

    assert arrays["x_train"].shape == (N_TRAIN, 28, 28) and arrays["y_train"].shape == (N_TRAIN,)
    assert arrays["x_test"].shape == (N_TEST, 28, 28) and arrays["y_test"].shape == (N_TEST,)
    _savez_deterministic(args.out, arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, sha256 {_sha256(args.out)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
