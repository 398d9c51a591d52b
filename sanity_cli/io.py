"""Atomic file writes: a reader never sees a partial file, and a failed write leaves the old file intact."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import SanityError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` (atomic on POSIX).

    The temporary name keeps the file's suffix so writers that infer the format from it work.
    On any exception the temporary file is removed and ``path`` is untouched; an OSError (disk full,
    read-only file system, ...) becomes a SanityError naming the file and the fix.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp_path, path)
    except OSError as err:
        raise SanityError(f"cannot write {path} ({err.strerror or err}); free disk space or make the "
                          f"directory writable (earlier files are unchanged)") from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks: the one file hasher (model cache, model files, data)."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
