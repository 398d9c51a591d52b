"""The method registry: config `kind` -> attribution function.

Every method maps (Keras model, images (N,H,W,C), target classes (N,)) to float32 maps of the images' shape.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Mapping

from ..errors import SanityError
from ..params import Anything, Param


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
    declared: Mapping[str, Param] | None = None  # its parameters' rules and defaults (None: from the signature)

    @property
    def gradient_based(self) -> bool:
        """May serve as a noise tunnel's base."""
        return self.recipe is not None and not self.tunnel

    def params(self) -> Mapping[str, Param]:
        """The declared parameters (method.NAME.PARAM), or for an undeclared entry its function's keyword
        arguments with their defaults."""
        if self.declared is not None:
            return self.declared
        skip = {"model", "images", "targets", "batch_size", "seed", "options"}
        return {name: Anything(None if p.default is inspect.Parameter.empty else p.default)
                for name, p in inspect.signature(self.recipe or self.fn).parameters.items() if name not in skip}

    def parameters(self) -> list[str]:
        return list(self.params())


REGISTRY: dict[str, MethodSpec] = {}


def register(kind: str, params: Mapping[str, Param] | None = None, **flags) -> Callable:
    """Register a maps function `fn(model, images, targets, *, <params>, batch_size, seed)` under `kind`, with its
    parameters declared (params.py: rule and default of each)."""
    def decorate(fn: Callable) -> Callable:
        REGISTRY[kind] = MethodSpec(kind, fn, declared=params, **flags)
        return fn

    return decorate


def register_recipe(kind: str, params: Mapping[str, Param] | None = None, **flags) -> Callable:
    """Register a gradient-based method by its recipe, `recipe(**params) -> engine.Recipe`: methods.explain_many
    runs it through the model's engine (all passes and sums on the device, batched with the other recipes)."""
    def decorate(recipe: Callable) -> Callable:
        REGISTRY[kind] = MethodSpec(kind, None, recipe=recipe, declared=params, **flags)
        return recipe

    return decorate


def get(kind: str) -> MethodSpec:
    if kind not in REGISTRY:
        raise SanityError(f"unknown method '{kind}'; choose from {', '.join(sorted(REGISTRY))}")
    return REGISTRY[kind]
