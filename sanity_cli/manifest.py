"""What makes a run reproducible: resolved config, versions, data provenance, seeds, git commit, timings."""

from __future__ import annotations

import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

from typing import Mapping

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


def build_manifest(config: Mapping, *, provenance, models, phases, started, extra=None,
                   command: list[str] | None = None) -> dict:
    """The manifest of a run or a training: `config` is the resolved config (RunSpec.config), `command` what
    reproduces it (the CLI's invocation; check()'s Result.save has none)."""
    return {
        "command": list(command) if command else ["python", "-c", "sanity_cli.check(...)"],
        "config": dict(config),
        "seed": config["seed"],
        "versions": versions(),
        "git_commit": git_commit(),
        "device": device_summary(),
        "host": platform.node(),
        "data_provenance": provenance,
        "models": models,
        "phase_seconds": phases,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_seconds": round(time.time() - started, 2),
        **(extra or {}),
    }
