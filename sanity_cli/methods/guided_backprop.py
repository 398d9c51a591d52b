"""Guided Backpropagation (Springenberg et al. 2014)."""

from __future__ import annotations

import numpy as np

from .engine import engine_for
from .registry import register


@register("guided_backprop", gradient_based=True, uses_guided_relu=True)
def guided_backprop(model, images, targets, *, output: str = "logit", batch_size: int = 256, seed=0) -> np.ndarray:
    """Gradient where every ReLU's backward pass is g_in = g_out * [g_out > 0] * [x_forward > 0]."""
    return engine_for(model).gradients(images, targets, output=output, guided=True, batch_size=batch_size)
