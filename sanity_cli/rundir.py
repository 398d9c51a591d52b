"""The run directory: the one object that decides whether a directory is new, resumable, busy, finished or holds
another config's run, and that claims, locks, marks failed or removes it. The CLI asks it before Hydra writes
anything; the core, the unit store, sweeps and `reproduce` use the same answers.

A run directory is *finished* once its manifest (written last) exists; *unfinished* while `units/run.json` holds
the fingerprint of the config that started it; *busy* while another process holds `units/.lock`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Mapping

from omegaconf import DictConfig, OmegaConf

from .errors import SanityError
from .io import write_json, write_text

MANIFEST = "manifest.json"
UNITS_DIR = "units"
RUN_FILE = "run.json"
LOCK_FILE = ".lock"
ERROR_FILE = "error.txt"      # a failed run's one-line error (sweep jobs; runs that had finished units)
NOT_FINGERPRINTED = ("resume",)  # keys that do not change the results
# what a sanity run puts into its directory before its first result: a folder holding only these is still free
OWN_ENTRIES = (".hydra", "cli.log", ERROR_FILE, UNITS_DIR)


class RunDirRefused(SanityError):
    """The directory is not ours to write: finished, busy, or another config's. Nothing was written into it, and
    nothing may be (not even an error.txt)."""


def config_fingerprint(cfg: DictConfig | Mapping) -> str:
    """sha256 of the resolved config (without `resume`): equal fingerprints give equal results."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    for key in NOT_FINGERPRINTED:
        container.pop(key, None)
    return hashlib.sha256(json.dumps(container, sort_keys=True, default=str).encode()).hexdigest()[:16]


def hydra_quoted(path: Path | str) -> str:
    """`path` as a quoted Hydra override value that Hydra and OmegaConf turn back into exactly `path` (spaces,
    quotes, backslashes and `${` included)."""
    text = re.sub(r"(\\+)('|$)", lambda m: m.group(1) * 2 + m.group(2), str(path))
    return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"


def omegaconf_literal(path: Path | str) -> str:
    """`path` as an OmegaConf string value that reads back as exactly `path` (`${` is not an interpolation)."""
    return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", str(path))


class RunDir:
    """One run directory (see the module docstring)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.units = self.path / UNITS_DIR
        self._lock = None
        self._resumed = False
        # what the directory held before this run touched it: a failure removes only what the run added
        self.preexisting = set(os.listdir(self.path)) if self.path.is_dir() else None

    def __str__(self) -> str:
        return str(self.path)

    # ---------------------------------------------------------------- state
    def finished(self) -> bool:
        return (self.path / MANIFEST).exists()

    def finished_fingerprint(self) -> str | None:
        try:
            return json.loads((self.path / MANIFEST).read_text()).get("config_fingerprint")
        except (OSError, ValueError, AttributeError):
            return None

    def unfinished_fingerprint(self) -> str | None:
        """The fingerprint of the unfinished run here, or None when it holds none (or an unreadable one)."""
        try:
            return json.loads((self.units / RUN_FILE).read_text())["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def holds_work(self) -> bool:
        """A finished run or at least one finished unit: something a failure must never remove."""
        return self.finished() or any(self.units.glob("*.npz"))

    def busy(self) -> bool:
        """Another process holds the lock."""
        from filelock import FileLock, Timeout

        lock_file = self.units / LOCK_FILE
        if self._lock is not None or not lock_file.exists():
            return False
        lock = FileLock(str(lock_file))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        lock.release()
        return False

    # ---------------------------------------------------------------- decisions
    def check_claim(self, fingerprint: str, resume: bool = False) -> bool:
        """May a run of the config with this fingerprint go here? Raises (one line) when the directory is another
        config's, busy, or finished; returns True when it holds this config's finished run and resume is set
        (nothing to do but show it)."""
        if self.finished():
            if not resume:
                raise RunDirRefused(f"{self.path} already holds a finished run; pick a new hydra.run.dir")
            if self.finished_fingerprint() != fingerprint:
                raise RunDirRefused(f"{self.path} holds a finished run of a different config; pick a new "
                                    f"hydra.run.dir")
            return True
        found = self.unfinished_fingerprint()
        foreign = sorted(name for name in (os.listdir(self.path) if self.path.is_dir() else ())
                         if name not in OWN_ENTRIES and not name.startswith((".sanity-write-test", ".")))
        if found is None and foreign:  # a user's own folder: never write into it (its files would be replaced)
            raise RunDirRefused(f"{self.path} already holds files that are not a sanity run ({', '.join(foreign[:3])}"
                                f"{', ...' if len(foreign) > 3 else ''}); pick a new or empty hydra.run.dir")
        if found is not None and found != fingerprint and any(self.units.glob("*.npz")):
            raise RunDirRefused(f"{self.path} holds an unfinished run of a different config (fingerprint {found}, "
                                f"this config {fingerprint}); resume it with its own overrides, or pick a new "
                                f"hydra.run.dir=DIR")
        if self.busy():
            raise RunDirRefused(self.busy_message())
        return False

    def busy_message(self) -> str:
        return (f"another sanity process is writing {self.path}; wait for it to finish, or pick a new "
                f"hydra.run.dir=DIR")

    def ensure_writable(self, key: str = "hydra.run.dir") -> None:
        """Create the directory (and its parents) and prove a file can be written into it."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".sanity-write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise SanityError(f"cannot write results to {self.path} ({err.strerror}); run from a writable "
                              f"directory or pass {key}=DIR") from None

    @staticmethod
    def newest_resumable(root: Path, fingerprint: str) -> RunDir | None:
        """The newest unfinished run directory under root started by the config with this fingerprint."""
        if not Path(root).is_dir():
            return None
        candidates = [RunDir(p.parent.parent) for p in Path(root).rglob(f"{UNITS_DIR}/{RUN_FILE}")]
        candidates = [d for d in candidates if d.unfinished_fingerprint() == fingerprint and not d.finished()]
        return max(candidates, key=lambda d: (d.units / RUN_FILE).stat().st_mtime, default=None)

    # ---------------------------------------------------------------- claiming and locking
    @property
    def claimed(self) -> bool:
        return self._lock is not None

    def claim(self, fingerprint: str) -> bool:
        """Lock the directory against a second process and claim it for this config (or check that it is ours);
        remove temporary files a killed process left behind. Returns True when it already held this config's
        unfinished run (a resume). Claiming a directory this object already holds returns the same answer."""
        from filelock import FileLock, Timeout

        if self._lock is not None:
            return self._resumed
        self.units.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.units / LOCK_FILE))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RunDirRefused(self.busy_message()) from None
        self._lock = lock
        try:
            self.check_claim(fingerprint)  # again, under the lock: finished or claimed meanwhile?
            for stale in (*self.path.glob(".*.tmp*"), *self.units.glob(".*.tmp*")):
                stale.unlink(missing_ok=True)  # a killed writer's temporary file, never a result
            self.clear_failure()  # an earlier attempt's error.txt
            # another config's start that finished no unit (it failed at once) is taken over, not resumed
            self._resumed = self.unfinished_fingerprint() == fingerprint
            if not self._resumed:
                write_json(self.units / RUN_FILE, {"fingerprint": fingerprint})
            return self._resumed
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ---------------------------------------------------------------- endings
    def remove_units(self) -> None:
        """After the manifest is written the units are redundant."""
        shutil.rmtree(self.units, ignore_errors=True)

    def record_failure(self, message: str) -> None:
        write_text(self.path / ERROR_FILE, message + "\n")

    def clear_failure(self) -> None:
        (self.path / ERROR_FILE).unlink(missing_ok=True)

    def abandon(self, message: str, created: list[Path]) -> str:
        """After a failed run, under this object's lock (taken here if not held; a directory another process holds,
        or a finished one, is left as it is): a directory this invocation created (`created`: it and any new
        parents, innermost first) that holds no finished unit is removed with those parents; anything else keeps
        its work and gets error.txt. Returns what happened, for the log."""
        from filelock import FileLock, Timeout

        if self.finished() or not self.path.is_dir():
            return f"{self.path} left as it is"
        if self._lock is None and self.units.is_dir():  # without units/ no sanity process has claimed it
            lock = FileLock(str(self.units / LOCK_FILE))
            try:
                lock.acquire(timeout=0)
            except (Timeout, OSError):
                return f"{self.path} belongs to another process; left as it is"
            self._lock = lock
        try:
            return self._abandon(message, created)
        finally:
            self.release()
            self.units.rmdir() if self.units.is_dir() and not any(self.units.iterdir()) else None

    def _abandon(self, message: str, created: list[Path]) -> str:
        if self.path in created and not self.holds_work():
            shutil.rmtree(self.path, ignore_errors=True)
            for parent in created[1:]:
                try:
                    parent.rmdir()  # only when empty
                except OSError:
                    break
            return f"nothing was kept ({self.path} removed)"
        if self.preexisting is not None and not self.holds_work():  # an existing folder: take back what we added
            for name in sorted(set(os.listdir(self.path)) - self.preexisting):
                entry = self.path / name
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            return f"nothing was kept (what this run added to {self.path} was removed)"
        if self.path.is_dir():
            try:
                self.record_failure(message)
            except SanityError:
                pass  # the directory is not writable: the error line on stderr is all there is
            return f"finished parts kept in {self.path}; the error is in {self.path / ERROR_FILE}"
        return "nothing was written"


def failed_jobs(sweep_dir: Path) -> list[tuple[str, str]]:
    """(job directory name, error line) of every failed job under sweep_dir."""
    return [(path.parent.name, path.read_text().strip()) for path in sorted(Path(sweep_dir).rglob(ERROR_FILE))
            if not RunDir(path.parent).finished()]


def new_directories(path: Path) -> list[Path]:
    """path and those of its parents that do not exist yet, innermost first (what creating path would add)."""
    created = []
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        created.append(candidate)
    return created
