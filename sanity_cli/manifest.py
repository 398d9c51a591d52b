"""What makes a run reproducible: resolved config, versions, data provenance, seeds, git commit, timings."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

PACKAGES = ("sanity-cli", "tensorflow", "keras", "tensorflow-datasets", "hydra-core", "omegaconf", "numpy",
            "scipy", "scikit-image", "pandas", "matplotlib")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=Path(__file__).resolve().parent,
                               capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def device_summary() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:  # the card's name where the driver reports it, e.g. "/physical_device:GPU:0 (NVIDIA H100 80GB HBM3)"
        return ", ".join(f"{gpu.name} ({tf.config.experimental.get_device_details(gpu).get('device_name', 'GPU')})"
                         for gpu in gpus)
    return "CPU (TensorFlow sees no GPU)"


def invocation(command: str) -> list[str]:
    """The `sanity` command that reproduces this job: the config folders it was composed from (--config-path,
    --config-name, --config-dir, hydra.searchpath) and its overrides as Hydra recorded them (a sweep job's own
    values; not its run directory: a reproduction writes a new one), or the process's argv outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra = HydraConfig.get()
    except ValueError:  # not running under Hydra
        return list(sys.argv)
    from .paths import config_dir

    flags = []
    for source in hydra.runtime.config_sources:
        folder = str(source.path).removeprefix("file://")
        if source.provider == "main" and Path(folder).resolve() != config_dir():
            flags += ["--config-path", folder]
        elif source.provider == "command-line":
            flags += ["--config-dir", folder]
    if hydra.job.config_name not in (None, "sanity"):
        flags += ["--config-name", hydra.job.config_name]
    searchpath = [o for o in hydra.overrides.hydra if o.startswith("hydra.searchpath=")]
    return ["sanity", command, *flags, *searchpath, *hydra.overrides.task]


def build_manifest(cfg: DictConfig, *, dataset, models, phases, started, extra=None, command: str = "run") -> dict:
    return {
        "command": invocation(command),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "seed": cfg.seed,
        "versions": versions(),
        "git_commit": git_commit(),
        "device": device_summary(),
        "host": platform.node(),
        "data_provenance": dataset.provenance,
        "models": models,
        "phase_seconds": phases,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_seconds": round(time.time() - started, 2),
        **(extra or {}),
    }
