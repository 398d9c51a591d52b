"""Model-free controls: they ignore the model, so they show what an insensitive explanation scores."""

from __future__ import annotations

import numpy as np
from skimage import feature, filters

from ..params import Number
from .registry import register


def _gray(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, np.float64).mean(axis=-1)


def _per_channel(maps2d: np.ndarray, images: np.ndarray) -> np.ndarray:
    return np.broadcast_to(maps2d[..., None], images.shape).astype(np.float32)


@register("sobel", params={}, needs_model=False)
def sobel(model, images, targets, *, options=None, seed=0) -> np.ndarray:
    """Sobel gradient magnitude of the grayscale input (skimage.filters.sobel)."""
    return _per_channel(np.stack([filters.sobel(g) for g in _gray(images)]), images)


@register("canny", params={"sigma": Number(1.0, gt=0)}, needs_model=False)
def canny(model, images, targets, *, sigma: float, options=None, seed=0) -> np.ndarray:
    """Canny edge map of the grayscale input (skimage.feature.canny), as 0/1 floats."""
    return _per_channel(np.stack([feature.canny(g, sigma=sigma) for g in _gray(images)]).astype(np.float32),
                        images)


@register("random", params={}, needs_model=False, reseed_per_stage=True)
def random(model, images, targets, *, options=None, seed=0) -> np.ndarray:
    """Standard normal noise of the input's shape from rng(seed); every stage reseeds it (reseed_per_stage)."""
    rng = np.random.default_rng(list(np.atleast_1d(seed).astype(int)))
    return rng.standard_normal(np.shape(images)).astype(np.float32)
