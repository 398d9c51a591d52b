"""Shared fixtures: running the real `sanity` command, in this process (`sanity`, fast) or in a subprocess
(`sanity_process`, for what only a process can show: signals, locks held by another process, injected OS errors),
offline, with one model cache for the session."""

from __future__ import annotations

import gzip
import logging
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One model cache for the whole session, so each distinct model trains once."""
    return tmp_path_factory.mktemp("model_cache")


@pytest.fixture
def sanity_process(tmp_path, model_cache):
    """Run `sanity ARGS...` as its own process in tmp_path (outputs land in tmp_path/results); returns
    CompletedProcess. For what only a process shows: signals, locks held by another process, cross-process
    determinism, start-up without TensorFlow, injected OS errors."""

    def run(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
        environment = dict(os.environ, SANITY_CACHE_DIR=str(model_cache), TFDS_DATA_DIR=str(tmp_path / "tfds"),
                           PYTHONUNBUFFERED="1")
        environment.update(env or {})
        return subprocess.run([sys.executable, "-m", "sanity_cli", *args], cwd=cwd or tmp_path, env=environment,
                              capture_output=True, text=True, timeout=timeout)

    return run


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def sanity(tmp_path, model_cache, monkeypatch, capsys):
    """Run `sanity ARGS...` in this process through cli.main (cwd tmp_path, outputs in tmp_path/results); returns
    what the command returns: exit code, stdout, stderr (Python-level output; TensorFlow's C++ log is not
    captured)."""
    from sanity_cli import cli

    import tensorflow  # noqa: F401
    from absl import logging as absl_logging

    # Hydra's logging.config.dictConfig closes every live handler; absl's closes its stream unless it is a
    # standard one, which here would be pytest's capture file. (A real `sanity` process has the real stderr.)
    monkeypatch.setattr(absl_logging.get_absl_handler().python_handler, "stream", sys.__stderr__)

    def run(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float | None = None) -> Completed:
        monkeypatch.chdir(cwd or tmp_path)
        for key, value in {"SANITY_CACHE_DIR": str(model_cache), "TFDS_DATA_DIR": str(tmp_path / "tfds"),
                           **(env or {})}.items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        before = set(logging.root.handlers)
        try:
            code = cli.main(list(args))
        except SystemExit as exit_:
            code = exit_.code
        finally:  # the handlers Hydra added hold this test's captured streams and the run's cli.log
            for handler in set(logging.root.handlers) - before:
                logging.root.removeHandler(handler)
                handler.close()
        out, err = capsys.readouterr()
        return Completed(code, out, err)

    return run


def run_dirs(base: Path) -> list[Path]:
    """Finished run directories (with a manifest) under base/results."""
    return sorted(p.parent for p in (base / "results").rglob("manifest.json"))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an IDX file (gzip): magic 0x0000 08 ndim, big-endian dims, uint8 data."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def make_idx_dataset(directory: Path, n_train: int = 600, n_test: int = 100, seed: int = 0) -> Path:
    """A small learnable 10-class data set of 28x28 images in the four standard IDX files:
    class k is a bright bar at an angle k*18 degrees plus noise (a stand-in for Fashion-MNIST offline)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-13.5:14.5, -13.5:14.5]

    def images(labels):
        out = np.empty((len(labels), 28, 28), np.uint8)
        for i, label in enumerate(labels):
            angle = np.deg2rad(label * 18.0)
            distance = np.abs(xx * np.sin(angle) - yy * np.cos(angle))
            picture = 220.0 * (distance < 2.5) + rng.normal(0, 20, (28, 28))
            out[i] = np.clip(picture, 0, 255).astype(np.uint8)
        return out

    directory.mkdir(parents=True, exist_ok=True)
    train_labels = rng.integers(0, 10, n_train)
    test_labels = rng.integers(0, 10, n_test)
    write_idx(directory / "train-images-idx3-ubyte.gz", images(train_labels))
    write_idx(directory / "train-labels-idx1-ubyte.gz", train_labels)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", images(test_labels))
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", test_labels)
    return directory
