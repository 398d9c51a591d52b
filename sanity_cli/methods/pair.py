"""XRAI (Kapishnikov et al. 2019), Blur IG (Xu et al. 2020) and Guided IG (Kapishnikov et al. 2021), run by PAIR's
framework-agnostic `saliency.core` 0.2.1: its algorithms, fed the gradients of sanity's engine.

PAIR explains one image at a time; its `call_model_function` gets a batch of points on the image's path (XRAI's
IG steps and Blur IG's blur steps, up to `batch_size` per call; Guided IG's path is chosen step by step, one point
per call) and returns INPUT_OUTPUT_GRADIENTS, d f_c / d x of the target logit, from engine.gradients (one traced
function per model, shared with Gradient).
"""

from __future__ import annotations

import contextlib
import inspect
import logging

import numpy as np

from .registry import register
from ..params import Choice, Flag, Int, Number
from .declared import BASELINE
from .traced import channel_baseline


def call_model_function(model, options):
    """PAIR's call_model_function(x_value_batch, call_model_args={'target': c}, expected_keys) -> gradients of
    class c's logit for every point of the batch, options.batch_size points per engine call."""
    from saliency.core.base import INPUT_OUTPUT_GRADIENTS

    from .engine import engine_for

    engine = engine_for(model, options)

    def call(x_value_batch, call_model_args=None, expected_keys=None):
        points = np.asarray(x_value_batch, np.float32)
        targets = np.full(len(points), call_model_args["target"], np.int32)
        return {INPUT_OUTPUT_GRADIENTS: engine.gradients(points, targets)}

    return call


class _QuantileInterpolation:
    """numpy, whose quantile also takes the `interpolation=` keyword that PAIR 0.2.1's guided_ig passes (NumPy 2
    removed it for `method=`)."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def quantile(a, q, *args, interpolation=None, **kwargs):
        if interpolation is not None:
            kwargs["method"] = interpolation
        return np.quantile(a, q, *args, **kwargs)


@contextlib.contextmanager
def numpy_compat():
    """While it is open, saliency.core.guided_ig runs on NumPy 2 (its one call of np.quantile(interpolation=...)
    is passed on as method=...); nothing else in PAIR changes."""
    from saliency.core import guided_ig as module

    if "interpolation" in inspect.signature(np.quantile).parameters:
        yield
        return
    saved, module.np = module.np, _QuantileInterpolation()
    try:
        yield
    finally:
        module.np = saved


@contextlib.contextmanager
def _quiet(name: str):
    """The logger `name` passes on warnings and errors only while it is open."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _per_image(model, images, targets, options, mask) -> np.ndarray:
    """mask(image, call, args) -> (H, W) or (H, W, C) for every image; (N, H, W, C) float32."""
    call = call_model_function(model, options)
    images = np.asarray(images, np.float32)
    maps = []
    for image, target in zip(images, np.asarray(targets)):
        m = np.asarray(mask(image, call, {"target": int(target)}), np.float64)
        maps.append(np.broadcast_to(m[..., None], image.shape) if m.ndim == 2 else m)
    return np.stack(maps).astype(np.float32)


@register("xrai", params={"steps": Int(100, low=1), "algorithm": Choice("full", ("full", "fast")),
                         "area_threshold": Number(1.0, gt=0, high=1)})
def xrai(model, images, targets, *, steps: int, algorithm: str, area_threshold: float, options,
         seed=0) -> np.ndarray:
    """XRAI: IG (`steps` points, PAIR's baselines: the image's min and max) summarised over Felzenszwalb segments,
    each region ranked by its attribution density (saliency.core.XRAI.GetMask); the same map on every channel."""
    from saliency.core import XRAI, XRAIParameters

    parameters = XRAIParameters(steps=steps, area_threshold=float(area_threshold), algorithm=algorithm)
    method = XRAI()
    with _quiet("saliency.core.xrai"):  # its two INFO lines per image ("Computing IG...") stay out of the run's log
        return _per_image(model, images, targets, options,
                          lambda x, call, args: method.GetMask(x, call, call_model_args=args,
                                                               batch_size=options.batch_size,
                                                               extra_parameters=parameters))


@register("blur_ig", params={"steps": Int(100, low=1), "max_sigma": Number(50.0, gt=0),
                            "grad_step": Number(0.01, gt=0), "sqrt": Flag(False)})
def blur_ig(model, images, targets, *, steps: int, max_sigma: float, grad_step: float, sqrt: bool, options,
            seed=0) -> np.ndarray:
    """Blur IG: integrated gradients along the path of ever stronger Gaussian blurs of the image, sigma from 0 to
    max_sigma in `steps` (saliency.core.BlurIG.GetMask)."""
    from saliency.core import BlurIG

    method = BlurIG()
    return _per_image(model, images, targets, options,
                      lambda x, call, args: method.GetMask(x, call, call_model_args=args, max_sigma=max_sigma,
                                                           steps=steps, grad_step=grad_step, sqrt=sqrt,
                                                           batch_size=options.batch_size))


@register("guided_ig", params={"steps": Int(200, low=1), "fraction": Number(0.25, gt=0, high=1),
                              "max_dist": Number(0.02, gt=0), "baseline": BASELINE})
def guided_ig(model, images, targets, *, steps: int, fraction: float, max_dist: float, baseline, options,
              seed=0) -> np.ndarray:
    """Guided IG: IG along an adaptive path from the baseline that moves the features of smallest |gradient|
    first, at most max_dist from the straight line (saliency.core.GuidedIG.GetMask)."""
    from saliency.core import GuidedIG

    images = np.asarray(images, np.float32)
    base = np.broadcast_to(channel_baseline("guided_ig", baseline, images.shape[-1]), images.shape[1:])
    method = GuidedIG()
    with numpy_compat():
        return _per_image(model, images, targets, options,
                          lambda x, call, args: method.GetMask(x, call, call_model_args=args, x_baseline=base,
                                                               x_steps=steps, fraction=fraction, max_dist=max_dist))
