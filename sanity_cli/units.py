"""Resumable runs: every finished unit of work is saved atomically under <run_dir>/units/.

Units: `reference` (the trained / true-label model's maps) and `stage-KK-repeat-R` (one randomized stage:
its metric values and the normalised maps shown in the grids). A run killed at any moment, even by SIGKILL,
continues where it stopped when started again into the same run directory (`resume=true` finds it), and
ends with the same metrics.csv as an uninterrupted run. `units/run.json` holds the fingerprint of the
resolved config, so a run directory is only ever resumed by the config that started it.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from .errors import SanityError
from .io import atomic_path, write_json
from .rundir import RunDir

INPUTS_FILE = "inputs.json"


class UnitStore:
    """The finished units of one run directory."""

    def __init__(self, run_dir: RunDir | str | os.PathLike, fingerprint: str, log=print):
        self.run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.dir = self.run_dir.units
        self.fingerprint = fingerprint
        self.log = log
        self.resumed = 0  # the finished units found by open()
        self._worker: ThreadPoolExecutor | None = None
        self._jobs: list[Future] = []

    def open(self) -> int:
        """Claim and lock the run directory (RunDir.claim; nothing new if the caller already claimed it). Returns
        the finished unit count."""
        if not self.run_dir.claim(self.fingerprint):
            return 0
        self.resumed = len(list(self.dir.glob("*.npz")))
        if self.resumed:
            self.log(f"resume: {self.resumed} finished units in {self.dir}; skipping them")
        return self.resumed

    def resuming(self) -> bool:
        """Whether an earlier run of this directory finished some units (checked before this run saves any)."""
        return any(self.dir.glob("*.npz"))

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

    def release(self) -> None:
        self.wait()
        self.run_dir.release()

    def finish_later(self, name: str, compute) -> Future:
        """compute() -> the unit's arrays, then save them, on a worker thread while the caller goes on (a stage's
        metrics and its unit file overlap the next stage's gradient passes). At most one unit is in flight: the
        previous one is waited for first, so memory holds one stage's maps and a failure surfaces at once."""
        if self._jobs:
            self._jobs[-1].result()
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sanity-units")

        def job():
            arrays = compute()
            self.save(name, arrays)
            return arrays

        self._jobs = [self._worker.submit(job)]
        return self._jobs[0]

    def wait(self) -> None:
        """Block until the unit handed to finish_later is saved or has failed. Called when a run ends or fails;
        a failure here is logged (the run's own error, if any, is the one reported)."""
        for job in self._jobs:
            if job.exception() is not None:
                self.log(f"units: a unit could not be finished ({type(job.exception()).__name__}: "
                         f"{job.exception()})")
        self._jobs.clear()

    def save(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        with atomic_path(self.dir / f"{name}.npz") as tmp:
            np.savez(tmp, **arrays)


class MemoryStore:
    """No run directory (the Python API): nothing is resumed or saved; each unit is computed on the spot."""

    resumed = 0

    def resuming(self) -> bool:
        return False

    def check_inputs(self, inputs: dict) -> None:
        """Nothing to compare them with."""

    def load(self, name: str) -> None:
        return None

    def save(self, name: str, arrays: dict) -> None:
        """Kept nowhere: the Comparison holds what it needs."""

    def finish_later(self, name: str, compute) -> Future:
        job: Future = Future()
        job.set_result(compute())
        return job

    def wait(self) -> None:
        """Every unit was finished on the spot."""


def stage_unit(stage: int, repeat: int) -> str:
    return f"stage-{stage:02d}-repeat-{repeat}"
