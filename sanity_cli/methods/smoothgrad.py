"""SmoothGrad (Smilkov et al. 2017) and VarGrad (Adebayo et al. 2018) over any gradient-based method."""

from __future__ import annotations

import dataclasses

from ..params import Anything, Int, Number, Text
from .engine import Recipe
from .registry import MethodSpec, get, register_recipe


def _tunnel_params(samples: int) -> dict:
    """A noise tunnel's parameters: its gradient-based base method (checked by methods.resolve_params) and that
    method's own parameters, the number of noisy copies and the noise's std relative to the input's range."""
    return {"base": Text("gradient"), "samples": Int(samples, low=1), "sigma": Number(0.15, gt=0),
            "base_params": Anything({})}


def _tunnel(base: MethodSpec | str, samples, sigma, base_params, variance: bool) -> Recipe:
    """The base method's recipe over `samples` noisy copies of each image, eps ~ N(0, (sigma (max x - min x))^2)
    drawn per image on the device (engine.Recipe). methods.resolve_params checks the parameters (their
    declaration, _tunnel_params), resolves `base` and checks base_params."""
    base = base if isinstance(base, MethodSpec) else get(base)
    return dataclasses.replace(base.recipe(**dict(base_params or {})), samples=int(samples), sigma=float(sigma),
                               variance=variance)


@register_recipe("smoothgrad", params=_tunnel_params(50), tunnel=True)
def smoothgrad(base: MethodSpec | str = "gradient", samples: int = 50, sigma: float = 0.15,
               base_params: dict | None = None) -> Recipe:
    """SG(x) = 1/n sum_i E(x + eps_i)."""
    return _tunnel(base, samples, sigma, base_params, variance=False)


@register_recipe("vargrad", params=_tunnel_params(25), tunnel=True)
def vargrad(base: MethodSpec | str = "gradient", samples: int = 25, sigma: float = 0.15,
            base_params: dict | None = None) -> Recipe:
    """VG(x) = 1/n sum_i (E(x + eps_i) - SG(x))^2 (variance over the noisy copies)."""
    return _tunnel(base, samples, sigma, base_params, variance=True)
