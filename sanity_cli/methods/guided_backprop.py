"""Guided Backpropagation (Springenberg et al. 2014)."""

from __future__ import annotations

from .declared import OUTPUT
from .engine import Recipe
from .registry import register_recipe


@register_recipe("guided_backprop", params={"output": OUTPUT}, uses_guided_relu=True)
def guided_backprop(output: str = "logit") -> Recipe:
    """Gradient where every ReLU's backward pass is g_in = g_out * [g_out > 0] * [x_forward > 0]."""
    return Recipe(output=output, relu_rule="guided")
