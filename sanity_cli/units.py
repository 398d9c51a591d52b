"""Resumable runs: every finished unit of work is saved atomically under <run_dir>/units/.

Units: `reference` (the trained / true-label model's maps) and `stage-KK-repeat-R` (one randomized stage:
its metric values and the normalised maps shown in the grids). A run killed at any moment, even by SIGKILL,
continues where it stopped when started again into the same run directory (`resume=true` finds it), and
ends with the same metrics.csv as an uninterrupted run. `units/run.json` holds the fingerprint of the
resolved config, so a run directory is only ever resumed by the config that started it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from .errors import SanityError
from .io import atomic_path, write_json

UNITS_DIR = "units"
RUN_FILE = "run.json"
INPUTS_FILE = "inputs.json"
NOT_FINGERPRINTED = ("resume",)  # keys that do not change the results


def config_fingerprint(cfg: DictConfig) -> str:
    """sha256 of the resolved config (without `resume`): equal fingerprints give equal results."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_FINGERPRINTED:
        container.pop(key, None)
    return hashlib.sha256(json.dumps(container, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished(run_dir: Path) -> bool:
    """A run directory is finished once its manifest (written last) exists."""
    return (Path(run_dir) / "manifest.json").exists()


def busy_message(run_dir: Path) -> str:
    return f"another sanity process is writing {run_dir}; wait for it to finish, or pick a new hydra.run.dir=DIR"


def check_fingerprint(run_dir: Path, fingerprint: str) -> None:
    found = saved_fingerprint(run_dir)
    if found is not None and found != fingerprint:
        raise SanityError(f"{run_dir} holds an unfinished run of a different config (fingerprint {found}, this "
                          f"config {fingerprint}); resume it with its own overrides, or pick a new hydra.run.dir=DIR")


def check_claim(run_dir: Path, fingerprint: str) -> None:
    """Before Hydra writes its .hydra/ copy into run_dir: the directory must not hold another config's
    unfinished run, nor be in use by another process."""
    from filelock import FileLock, Timeout

    check_fingerprint(run_dir, fingerprint)
    lock_file = Path(run_dir) / UNITS_DIR / ".lock"
    if lock_file.exists():
        lock = FileLock(str(lock_file))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise SanityError(busy_message(run_dir)) from None
        lock.release()


def saved_fingerprint(run_dir: Path) -> str | None:
    """The fingerprint of the unfinished run in run_dir, or None when it holds none (or an unreadable one)."""
    try:
        return json.loads((Path(run_dir) / UNITS_DIR / RUN_FILE).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


class UnitStore:
    """The finished units of one run directory."""

    def __init__(self, run_dir: Path, fingerprint: str, log=print):
        self.dir = Path(run_dir) / UNITS_DIR
        self.fingerprint = fingerprint
        self.log = log

    def open(self) -> int:
        """Claim the directory for this config (or check that it is ours) and lock it against a second
        process; remove temporary files a killed process left behind. Returns the finished unit count."""
        from filelock import FileLock, Timeout

        run_dir = self.dir.parent
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.dir / ".lock"))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise SanityError(busy_message(run_dir)) from None
        try:
            if finished(run_dir):  # finished by another process since our first look
                raise SanityError(f"{run_dir} already holds a finished run; pick a new hydra.run.dir")
            check_fingerprint(run_dir, self.fingerprint)
            for stale in (*run_dir.glob(".*.tmp*"), *self.dir.glob(".*.tmp*")):
                stale.unlink(missing_ok=True)  # a killed writer's temporary file, never a result
            if saved_fingerprint(run_dir) is None:
                write_json(self.dir / RUN_FILE, {"fingerprint": self.fingerprint})
                return 0
            done = len(list(self.dir.glob("*.npz")))
            if done:
                self.log(f"resume: {done} finished units in {self.dir}; skipping them")
            return done
        except BaseException:
            self.release()
            raise

    def check_inputs(self, inputs: dict) -> None:
        """The explained images, target classes and models must be those of the interrupted run (a resumed run
        whose data source or model changed would silently mix two experiments)."""
        path = self.dir / INPUTS_FILE
        if not path.exists():
            write_json(path, inputs)
            return
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = None
        if saved != json.loads(json.dumps(inputs)):
            differing = sorted(k for k in inputs if not isinstance(saved, dict) or saved.get(k) != inputs[k])
            raise SanityError(f"{self.dir.parent} was started with other inputs ({', '.join(differing)} differ: "
                              f"data source or model changed since); pick a new hydra.run.dir=DIR")

    def load(self, name: str) -> dict[str, np.ndarray] | None:
        """A finished unit's arrays, or None if it is not done (an unreadable file is recomputed)."""
        path = self.dir / f"{name}.npz"
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as saved:
                return {key: saved[key] for key in saved.files}
        except Exception as err:  # truncated or damaged: say so and compute it again
            self.log(f"resume: unit {path.name} is unreadable ({type(err).__name__}); recomputing it")
            return None

    def save(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        with atomic_path(self.dir / f"{name}.npz") as tmp:
            np.savez(tmp, **arrays)

    def remove(self) -> None:
        """After the run's manifest is written the units are redundant."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def release(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()


def stage_unit(stage: int, repeat: int) -> str:
    return f"stage-{stage:02d}-repeat-{repeat}"
