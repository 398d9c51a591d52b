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
    fn: Callable
    gradient_based: bool = False    # may serve as the base of smoothgrad / vargrad
    needs_model: bool = True        # False for the model-free controls
    needs_conv_layer: bool = False  # GradCAM family
    reseed_per_stage: bool = False  # random control: fresh noise at every stage
    uses_guided_relu: bool = False  # Guided Backprop family: meaningful only if the guided ReLU swap engages

    def parameters(self) -> list[str]:
        skip = {"model", "images", "targets", "batch_size", "seed"}
        return [p for p in inspect.signature(self.fn).parameters if p not in skip]


REGISTRY: dict[str, MethodSpec] = {}


def register(kind: str, **flags) -> Callable:
    def decorate(fn: Callable) -> Callable:
        REGISTRY[kind] = MethodSpec(kind, fn, **flags)
        return fn

    return decorate


def get(kind: str) -> MethodSpec:
    if kind not in REGISTRY:
        raise SanityError(f"unknown method '{kind}'; choose from {', '.join(sorted(REGISTRY))}")
    return REGISTRY[kind]
