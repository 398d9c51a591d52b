"""SmoothGrad (Smilkov et al. 2017) and VarGrad (Adebayo et al. 2018) over any gradient-based method."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import SanityError
from .engine import engine_for
from .registry import MethodSpec, register


def _noise_moments(model, images, targets, base: MethodSpec, samples, sigma, base_params, batch_size, seed,
                   variance):
    """The mean (and variance) of the base method's maps over `samples` noisy copies of each image,
    eps ~ N(0, (sigma * (max x - min x))^2) per image, drawn on the device (engine.Recipe). `base` is the composed
    base method (methods.explain resolves a config name and checks base_params)."""
    if not isinstance(samples, (int, np.integer)) or isinstance(samples, bool) or samples < 1:
        raise SanityError(f"smoothgrad/vargrad: samples must be a positive integer, got {samples}")
    if not sigma > 0:
        raise SanityError(f"smoothgrad/vargrad: sigma must be > 0, got {sigma}")
    recipe = dataclasses.replace(base.recipe(**dict(base_params or {})), samples=int(samples), sigma=float(sigma),
                                 variance=variance)
    return engine_for(model).maps(images, targets, recipe, seed=seed, batch_size=batch_size)


@register("smoothgrad")
def smoothgrad(model, images, targets, *, base: MethodSpec | str = "gradient", samples: int = 50, sigma: float = 0.15,
               base_params: dict | None = None, batch_size: int = 256, seed=0) -> np.ndarray:
    """SG(x) = 1/n sum_i E(x + eps_i)."""
    return _noise_moments(model, images, targets, base, samples, sigma, base_params, batch_size, seed, False)[0]


@register("vargrad")
def vargrad(model, images, targets, *, base: MethodSpec | str = "gradient", samples: int = 25, sigma: float = 0.15,
            base_params: dict | None = None, batch_size: int = 256, seed=0) -> np.ndarray:
    """VG(x) = 1/n sum_i (E(x + eps_i) - SG(x))^2 (variance over the noisy copies)."""
    return _noise_moments(model, images, targets, base, samples, sigma, base_params, batch_size, seed, True)[1]
