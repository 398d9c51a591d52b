"""DeconvNet (Zeiler & Fergus 2014, "Visualizing and understanding convolutional networks")."""

from __future__ import annotations

from .declared import OUTPUT
from .engine import Recipe
from .registry import register_recipe


@register_recipe("deconvnet", params={"output": OUTPUT}, uses_guided_relu=True)
def deconvnet(output: str = "logit") -> Recipe:
    """Gradient where every ReLU's backward pass is g_in = g_out * [g_out > 0], ignoring the forward input's sign
    (Guided Backprop also keeps [x_forward > 0]); max pooling routes by its switches, convolutions transpose, as the
    gradient does. Run by the engine with its ReLU swap (Recipe.relu_rule='deconvnet'), batched like Gradient."""
    return Recipe(output=output, relu_rule="deconvnet")
