"""Gradient (Simonyan et al. 2013) and Gradient ⊙ Input (Shrikumar et al. 2016)."""

from __future__ import annotations

import numpy as np

from .engine import engine_for
from .registry import register


@register("gradient", gradient_based=True)
def gradient(model, images, targets, *, output: str = "logit", batch_size: int = 256, seed=0) -> np.ndarray:
    """E(x) = d f_c(x) / d x."""
    return engine_for(model).gradients(images, targets, output=output, batch_size=batch_size)


@register("gradient_x_input", gradient_based=True)
def gradient_x_input(model, images, targets, *, output: str = "logit", batch_size: int = 256, seed=0) -> np.ndarray:
    """E(x) = x ⊙ d f_c(x) / d x."""
    return images * gradient(model, images, targets, output=output, batch_size=batch_size)
