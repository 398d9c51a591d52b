"""Gradient (Simonyan et al. 2013) and Gradient ⊙ Input (Shrikumar et al. 2016)."""

from __future__ import annotations

from .declared import OUTPUT
from .engine import Recipe
from .registry import register_recipe


@register_recipe("gradient", params={"output": OUTPUT})
def gradient(output: str = "logit") -> Recipe:
    """E(x) = d f_c(x) / d x."""
    return Recipe(output=output)


@register_recipe("gradient_x_input", params={"output": OUTPUT})
def gradient_x_input(output: str = "logit") -> Recipe:
    """E(x) = x ⊙ d f_c(x) / d x."""
    return Recipe(output=output, times_input=True)
