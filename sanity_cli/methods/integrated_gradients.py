"""Integrated Gradients (Sundararajan et al. 2017)."""

from __future__ import annotations

import numpy as np

from ..errors import SanityError
from ..params import Choice, Int
from .declared import BASELINE, OUTPUT
from .engine import Recipe
from .registry import register_recipe

RULES = ("midpoint", "trapezoid", "left", "pair")


def path_points(steps: int, rule: str = "midpoint") -> tuple[np.ndarray, np.ndarray]:
    """Positions a_k on [0, 1] and weights w_k (sum 1) of the Riemann rule approximating the path integral.

    midpoint:  a_k = (k + 1/2) / steps, w_k = 1 / steps           (k = 0..steps-1)
    trapezoid: a_k = k / (steps - 1),   w_k = 1 / (steps - 1), halved at both ends
    left:      a_k = k / steps,         w_k = 1 / steps           (left Riemann sum from the baseline)
    pair:      a_k = k / (steps - 1),   w_k = 1 / steps           (PAIR saliency's GetMask, which the paper
               used: np.linspace(0, 1, steps) summed and divided by steps; both ends, weights sum to 1)
    """
    if rule == "midpoint":
        return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    if rule == "left":
        return np.arange(steps) / steps, np.full(steps, 1.0 / steps)
    if rule == "pair":
        return np.linspace(0.0, 1.0, steps), np.full(steps, 1.0 / steps)
    if rule == "trapezoid":
        if steps < 2:
            raise SanityError("integrated_gradients: the trapezoid rule needs steps >= 2")
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, steps), weights
    raise SanityError(f"integrated_gradients: rule must be one of {', '.join(RULES)}, got '{rule}'")


def baseline_value(baseline) -> float | tuple[float, ...]:
    """'zeros', a constant number, or one number per channel (methods.explain turns 'black' into the model's
    black-pixel value, per channel for per-channel input ranges)."""
    if isinstance(baseline, str) and baseline == "zeros" or baseline is None:
        return 0.0
    try:
        value = np.asarray(baseline, np.float32)
    except (TypeError, ValueError):
        value = None
    if value is None or value.ndim > 1 or value.dtype.kind != "f":
        raise SanityError(f"integrated_gradients: baseline must be 'zeros', 'black' (with the model's input range) "
                          f"or a number, got '{baseline}'")
    return float(value) if value.ndim == 0 else tuple(float(v) for v in np.asarray(baseline, np.float64))


@register_recipe("integrated_gradients", params={"steps": Int(50, low=1), "baseline": BASELINE,
                                                 "rule": Choice("midpoint", RULES), "output": OUTPUT})
def integrated_gradients(steps: int = 50, baseline="zeros", rule: str = "midpoint", output: str = "logit") -> Recipe:
    """IG(x) = (x - x') ⊙ sum_k w_k d f_c(x' + a_k (x - x')) / d x, all (image, step) points batched."""
    alphas, weights = path_points(steps, rule)
    return Recipe(output=output, path=True, alphas=tuple(alphas.tolist()), weights=tuple(weights.tolist()),
                  baseline=baseline_value(baseline))
