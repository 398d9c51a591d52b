"""Integrated Gradients (Sundararajan et al. 2017)."""

from __future__ import annotations

import numpy as np

from ..errors import SanityError
from .engine import accumulate_over_points, engine_for
from .registry import register

RULES = ("midpoint", "trapezoid", "left", "pair")


def path_points(steps: int, rule: str = "midpoint") -> tuple[np.ndarray, np.ndarray]:
    """Positions a_k on [0, 1] and weights w_k (sum 1) of the Riemann rule approximating the path integral.

    midpoint:  a_k = (k + 1/2) / steps, w_k = 1 / steps           (k = 0..steps-1)
    trapezoid: a_k = k / (steps - 1),   w_k = 1 / (steps - 1), halved at both ends
    left:      a_k = k / steps,         w_k = 1 / steps           (left Riemann sum from the baseline)
    pair:      a_k = k / (steps - 1),   w_k = 1 / steps           (PAIR saliency's GetMask, which the paper
               used: np.linspace(0, 1, steps) summed and divided by steps; both ends, weights sum to 1)
    """
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise SanityError(f"integrated_gradients: steps must be a positive integer, got {steps}")
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


def make_baseline(images: np.ndarray, baseline) -> np.ndarray:
    """'zeros', a constant number, or one number per channel (methods.explain turns 'black' into the model's
    black-pixel value, per channel for per-channel input ranges)."""
    if isinstance(baseline, str) and baseline == "zeros" or baseline is None:
        return np.zeros_like(images[:1])
    try:
        return np.ascontiguousarray(np.broadcast_to(np.asarray(baseline, np.float32), images[:1].shape))
    except (TypeError, ValueError):
        raise SanityError(f"integrated_gradients: baseline must be 'zeros', 'black' (with the model's input range) "
                          f"or a number, got '{baseline}'") from None


@register("integrated_gradients", gradient_based=True)
def integrated_gradients(model, images, targets, *, steps: int = 50, baseline="zeros", rule: str = "midpoint",
                         output: str = "logit", batch_size: int = 256, seed=0) -> np.ndarray:
    """IG(x) = (x - x') ⊙ sum_k w_k d f_c(x' + a_k (x - x')) / d x, all (image, step) points batched."""
    images = np.asarray(images, np.float32)
    targets = np.asarray(targets)
    alphas, weights = path_points(steps, rule)
    base = make_baseline(images, baseline)
    delta = images - base
    engine = engine_for(model)

    def make_points(image_idx, point_idx):
        a = alphas[point_idx].reshape((-1,) + (1,) * (images.ndim - 1)).astype(np.float32)
        return base + a * delta[image_idx]

    def grad_fn(points, image_idx):
        return engine.gradients(points, targets[image_idx], output=output, batch_size=batch_size)

    mean_grad, _ = accumulate_over_points(grad_fn, make_points, len(images), len(alphas), batch_size, weights)
    return (delta * mean_grad).astype(np.float32)
