"""SmoothGrad (Smilkov et al. 2017) and VarGrad (Adebayo et al. 2018) over any gradient-based method."""

from __future__ import annotations

import numpy as np

from ..errors import SanityError
from .engine import accumulate_over_points
from .registry import MethodSpec, register


def _noisy_inputs(images: np.ndarray, samples: int, sigma: float, seed):
    """Noise eps ~ N(0, (sigma * (max x - min x))^2), drawn per image from rng(seed, image index) in
    sample order, so every (image, sample) gets the same noise whatever the chunking."""
    if not isinstance(samples, (int, np.integer)) or samples < 1:
        raise SanityError(f"smoothgrad/vargrad: samples must be a positive integer, got {samples}")
    if not sigma > 0:
        raise SanityError(f"smoothgrad/vargrad: sigma must be > 0, got {sigma}")
    seed = list(np.atleast_1d(seed).astype(int))
    spans = images.reshape(len(images), -1).max(1) - images.reshape(len(images), -1).min(1)
    streams: dict[int, np.random.Generator] = {}

    def make_points(image_idx, point_idx):
        out = np.empty((len(image_idx),) + images.shape[1:], np.float32)
        # pairs come image-major: each image is one run of consecutive rows
        starts = np.flatnonzero(np.r_[True, image_idx[1:] != image_idx[:-1]])
        for start, stop in zip(starts, [*starts[1:], len(image_idx)]):
            i = int(image_idx[start])
            if i not in streams:
                streams.clear()  # images are visited in order: keep one stream alive at a time
                streams[i] = np.random.default_rng(seed + [i])
            noise = streams[i].standard_normal((stop - start,) + images.shape[1:])
            noise *= sigma * spans[i]
            out[start:stop] = noise            # float32 of the float64 noise, as before
            out[start:stop] += images[i]
        return out

    return make_points


def _noise_moments(model, images, targets, base: MethodSpec, samples, sigma, base_params, batch_size, seed,
                   second_moment):
    """The first (and second) moment of the base method's maps over noisy copies of each image. `base` is the
    composed base method (methods.explain resolves a config name and checks base_params)."""
    images = np.asarray(images, np.float32)
    targets = np.asarray(targets)
    params = dict(base_params or {})

    def grad_fn(points, image_idx):
        return base.fn(model, points, targets[image_idx], batch_size=batch_size, **params)

    make_points = _noisy_inputs(images, samples, sigma, seed)
    return accumulate_over_points(grad_fn, make_points, len(images), samples, batch_size,
                                  second_moment=second_moment)


@register("smoothgrad")
def smoothgrad(model, images, targets, *, base: MethodSpec | str = "gradient", samples: int = 50, sigma: float = 0.15,
               base_params: dict | None = None, batch_size: int = 256, seed=0) -> np.ndarray:
    """SG(x) = 1/n sum_i E(x + eps_i)."""
    mean, _ = _noise_moments(model, images, targets, base, samples, sigma, base_params, batch_size, seed, False)
    return mean.astype(np.float32)


@register("vargrad")
def vargrad(model, images, targets, *, base: MethodSpec | str = "gradient", samples: int = 25, sigma: float = 0.15,
            base_params: dict | None = None, batch_size: int = 256, seed=0) -> np.ndarray:
    """VG(x) = 1/n sum_i E(x + eps_i)^2 - SG(x)^2 (variance over the noisy copies)."""
    mean, second = _noise_moments(model, images, targets, base, samples, sigma, base_params, batch_size, seed, True)
    return np.maximum(second - mean * mean, 0.0).astype(np.float32)
