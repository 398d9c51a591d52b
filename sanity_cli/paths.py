"""Where sanity's own configs live (imported by the Hydra search-path plugin, so it imports nothing heavy)."""

from __future__ import annotations

from pathlib import Path

from .errors import SanityError


def config_dir() -> Path:
    """configs/ installed inside the package (wheel), else the source checkout's top-level configs/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "sanity.yaml").exists():
            return candidate
    raise SanityError(f"cannot find the sanity configs beside {here}; reinstall with pip install sanity-cli")
