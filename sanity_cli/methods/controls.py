"""Model-free controls: they ignore the model, so they show what an insensitive explanation scores."""

from __future__ import annotations

import numpy as np
from skimage import feature, filters

from .registry import register


def _gray(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, np.float64).mean(axis=-1)


def _per_channel(maps2d: np.ndarray, images: np.ndarray) -> np.ndarray:
    return np.broadcast_to(maps2d[..., None], images.shape).astype(np.float32)


@register("sobel", needs_model=False)
def sobel(model, images, targets, *, batch_size: int = 256, seed=0) -> np.ndarray:
    """Sobel gradient magnitude of the grayscale input (skimage.filters.sobel)."""
    return _per_channel(np.stack([filters.sobel(g) for g in _gray(images)]), images)


@register("canny", needs_model=False)
def canny(model, images, targets, *, sigma: float = 1.0, batch_size: int = 256, seed=0) -> np.ndarray:
    """Canny edge map of the grayscale input (skimage.feature.canny), as 0/1 floats."""
    return _per_channel(np.stack([feature.canny(g, sigma=sigma) for g in _gray(images)]).astype(np.float32),
                        images)


@register("random", needs_model=False, reseed_per_stage=True)
def random(model, images, targets, *, batch_size: int = 256, seed=0) -> np.ndarray:
    """Standard normal noise of the input's shape from rng(seed); the pipeline reseeds it at every stage."""
    rng = np.random.default_rng(list(np.atleast_1d(seed).astype(int)))
    return rng.standard_normal(np.shape(images)).astype(np.float32)
