"""Your own saliency method (`method.NAME.kind: custom`): any function f(model, images, targets, **params) -> maps,
named as "package.module:function" (or "package.module.function"), run through the same stages, metrics and
verdict as the built-in methods."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np

from ..errors import SanityError, one_line
from ..params import Anything, Param
from .registry import register

NO_FUNCTION = "custom method: no function given; set method.NAME.function=package.module:function"


def split_name(function) -> tuple[str, str]:
    """("module", "function") from "module:function" or "module.function" (checked without importing)."""
    if not isinstance(function, str) or not function.strip():
        raise SanityError(NO_FUNCTION)
    module_name, sep, attr = function.partition(":")
    if not sep:
        module_name, _, attr = function.rpartition(".")
    if not module_name or not attr or not all(p.isidentifier() for p in [*module_name.split("."), attr]):
        raise SanityError(f"custom method: '{function}' does not name a function; write package.module:function")
    return module_name, attr


def resolve(function: str):
    """The callable named "module:function" or "module.function" (the working directory is importable, as for
    `python -m`)."""
    module_name, attr = split_name(function)
    here = str(Path.cwd())
    added = here not in sys.path and "" not in sys.path
    if added:  # the working directory is importable for this import only
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or any error raised while the user's module runs
        raise SanityError(f"custom method: cannot import {module_name} "
                          f"({one_line(err, first_line=True, with_type=True)})") from None
    finally:
        if added and here in sys.path:
            sys.path.remove(here)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise SanityError(f"custom method: {module_name} has no function {attr}")
    return fn


@register("custom", params={"function": Param(test=lambda v: isinstance(v, str), rule="package.module:function",
                                                missing=NO_FUNCTION),
                             "params": Anything({})})
def custom(model, images, targets, *, function: str, params: dict | None, options=None, seed=0) -> np.ndarray:
    """E(x) = f(model, images, targets, **params), maps shaped like the images or without their channel axis
    (then the same map on every channel); finite values required."""
    fn = resolve(function)
    try:
        maps = fn(model, images, targets, **(params or {}))
    except SanityError:
        raise
    except Exception as err:
        raise SanityError(f"custom method {function} raised {one_line(err, first_line=True, with_type=True)}") from None
    try:
        maps = np.asarray(maps, dtype=np.float32)
    except (TypeError, ValueError):
        raise SanityError(f"custom method {function} returned {type(maps).__name__}, not an array of maps") from None
    if maps.shape == images.shape[:-1]:
        maps = np.broadcast_to(maps[..., None], images.shape)
    if maps.shape != images.shape:
        raise SanityError(f"custom method {function} returned maps of shape {maps.shape}; expected the images' "
                          f"shape {images.shape} or {images.shape[:-1]}")
    if not np.isfinite(maps).all():
        bad = int((~np.isfinite(maps.reshape(len(maps), -1))).any(axis=1).sum())
        raise SanityError(f"custom method {function} returned NaN or Inf in {bad} of {len(maps)} maps")
    return np.ascontiguousarray(maps)
