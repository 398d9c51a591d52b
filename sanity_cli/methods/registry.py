"""The method registry: config `kind` -> attribution function.

Every method maps (Keras model, images (N,H,W,C), target classes (N,)) to float32 maps of the images' shape.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from ..errors import SanityError


@dataclass(frozen=True)
class MethodSpec:
    kind: str
    fn: Callable | None             # maps function (model, images, targets, ...); None for a recipe method
    recipe: Callable | None = None  # params -> engine.Recipe: run by the model's engine (maps_many batches them)
    tunnel: bool = False            # a noise tunnel (SmoothGrad, VarGrad) over a gradient-based base method
    needs_model: bool = True        # False for the model-free controls
    needs_conv_layer: bool = False  # GradCAM family
    reseed_per_stage: bool = False  # random control: fresh noise at every stage
    uses_guided_relu: bool = False  # Guided Backprop family: meaningful only if the guided ReLU swap engages

    @property
    def gradient_based(self) -> bool:
        """May serve as a noise tunnel's base."""
        return self.recipe is not None and not self.tunnel

    def parameters(self) -> list[str]:
        skip = {"model", "images", "targets", "batch_size", "seed"}
        return [p for p in inspect.signature(self.recipe or self.fn).parameters if p not in skip]


REGISTRY: dict[str, MethodSpec] = {}


def register(kind: str, **flags) -> Callable:
    def decorate(fn: Callable) -> Callable:
        REGISTRY[kind] = MethodSpec(kind, fn, **flags)
        return fn

    return decorate


def register_recipe(kind: str, **flags) -> Callable:
    """Register a gradient-based method by its recipe, `recipe(**params) -> engine.Recipe`: methods.explain_many
    runs it through the model's engine (all passes and sums on the device, batched with the other recipes)."""
    def decorate(recipe: Callable) -> Callable:
        REGISTRY[kind] = MethodSpec(kind, None, recipe=recipe, **flags)
        return recipe

    return decorate


def get(kind: str) -> MethodSpec:
    if kind not in REGISTRY:
        raise SanityError(f"unknown method '{kind}'; choose from {', '.join(sorted(REGISTRY))}")
    return REGISTRY[kind]
