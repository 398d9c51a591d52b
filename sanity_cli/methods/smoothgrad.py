"""SmoothGrad (Smilkov et al. 2017) and VarGrad (Adebayo et al. 2018) over any gradient-based method."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import SanityError
from .engine import Recipe
from .registry import MethodSpec, get, register_recipe


def _tunnel(base: MethodSpec | str, samples, sigma, base_params, variance: bool) -> Recipe:
    """The base method's recipe over `samples` noisy copies of each image, eps ~ N(0, (sigma (max x - min x))^2)
    drawn per image on the device (engine.Recipe). methods.explain resolves `base` and checks base_params."""
    if not isinstance(samples, (int, np.integer)) or isinstance(samples, bool) or samples < 1:
        raise SanityError(f"smoothgrad/vargrad: samples must be a positive integer, got {samples}")
    if not sigma > 0:
        raise SanityError(f"smoothgrad/vargrad: sigma must be > 0, got {sigma}")
    base = base if isinstance(base, MethodSpec) else get(base)
    return dataclasses.replace(base.recipe(**dict(base_params or {})), samples=int(samples), sigma=float(sigma),
                               variance=variance)


@register_recipe("smoothgrad", tunnel=True)
def smoothgrad(base: MethodSpec | str = "gradient", samples: int = 50, sigma: float = 0.15,
               base_params: dict | None = None) -> Recipe:
    """SG(x) = 1/n sum_i E(x + eps_i)."""
    return _tunnel(base, samples, sigma, base_params, variance=False)


@register_recipe("vargrad", tunnel=True)
def vargrad(base: MethodSpec | str = "gradient", samples: int = 25, sigma: float = 0.15,
            base_params: dict | None = None) -> Recipe:
    """VG(x) = 1/n sum_i (E(x + eps_i) - SG(x))^2 (variance over the noisy copies)."""
    return _tunnel(base, samples, sigma, base_params, variance=True)
