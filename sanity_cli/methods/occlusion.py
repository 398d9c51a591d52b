"""Occlusion (Zeiler & Fergus 2014, "Visualizing and understanding convolutional networks", Sec. 4.2)."""

from __future__ import annotations

import numpy as np

from ..errors import SanityError
from ..params import Int
from .declared import BASELINE, OUTPUT
from .engine import engine_for
from .passes import select
from .registry import register
from .traced import channel_baseline, traced


def patch_starts(size: int, patch: int, stride: int) -> np.ndarray:
    """Patch offsets 0, stride, 2 stride, ... along an axis of `size` pixels, plus size - patch when the last
    stride leaves the border uncovered: every pixel is covered by at least one patch."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    return np.asarray(starts, np.int32)


def _masks(rows, cols, patch, height: int, width: int):
    """(m, H) and (m, W) indicators of each patch's rows and columns (its mask is their outer product)."""
    import tensorflow as tf

    def indicator(starts, size):
        pixels = tf.range(size)[None]
        return tf.cast((pixels >= starts[:, None]) & (pixels < starts[:, None] + patch), tf.float32)

    return indicator(rows, height), indicator(cols, width)


def _occlusion_function(model, output: str, jit: bool):
    """fn(x, clean scores, targets, patch rows, patch cols, patch, baseline) -> (B, H, W): sum over the given
    patches of the drop of the target score, spread over each patch's pixels; every (image, patch) pair one model
    input of one call."""
    import tensorflow as tf

    height, width, channels = model.input_shape[1:]
    spec = tf.TensorSpec

    @tf.function(input_signature=(spec([None, height, width, channels], tf.float32), spec([None], tf.float32),
                                  spec([None], tf.int32), spec([None], tf.int32), spec([None], tf.int32),
                                  spec([], tf.int32), spec([channels], tf.float32)),
                 jit_compile=jit, autograph=False)
    def occlusion_fn(x, clean, targets, rows, cols, patch, baseline):
        row_mask, col_mask = _masks(rows, cols, patch, height, width)
        mask = (row_mask[:, :, None] * col_mask[:, None, :])[None, ..., None]          # (1, m, H, W, 1)
        occluded = x[:, None] + (baseline - x[:, None]) * mask                          # (B, m, H, W, C)
        count = tf.shape(rows)[0]
        logits = model(tf.reshape(occluded, [-1, height, width, channels]), training=False)
        scores = select(logits, tf.repeat(targets, count), output)
        drops = clean[:, None] - tf.reshape(scores, [-1, count])
        return tf.einsum("bm,mh,mw->bhw", drops, row_mask, col_mask)

    return occlusion_fn


def target_scores(model, images, targets, output: str, options) -> np.ndarray:
    """f_c(x) per image: the target's logit, or its softmax probability."""
    logits = engine_for(model, options).predict_logits(images).astype(np.float64)
    if output == "probability":
        logits = np.exp(logits - logits.max(axis=1, keepdims=True))
        logits /= logits.sum(axis=1, keepdims=True)
    return logits[np.arange(len(images)), targets].astype(np.float32)


def blocks(total: int, batch_size: int) -> tuple[int, list[tuple[int, int]]]:
    """(images per call, [(first, stop) of each block of the `total` perturbed copies]): at most batch_size model
    inputs per call, all of an image's copies in one call when they fit."""
    if total <= batch_size:
        return batch_size // total, [(0, total)]
    return 1, [(start, min(start + batch_size, total)) for start in range(0, total, batch_size)]


@register("occlusion", params={"patch": Int(4, low=1), "stride": Int(2, low=1), "baseline": BASELINE,
                              "output": OUTPUT})
def occlusion(model, images, targets, *, patch: int, stride: int, baseline, output: str, options,
              seed=0) -> np.ndarray:
    """E(x)_ij = mean over the patches P covering pixel (i, j) of f_c(x) - f_c(x with P set to the baseline):
    patch x patch squares (all channels) every `stride` pixels (and at the far border); the same map on every
    channel. Batched: many occluded copies of many images per model call."""
    import tensorflow as tf

    images = np.asarray(images, np.float32)
    targets = np.asarray(targets, np.int32)
    height, width, channels = images.shape[1:]
    if patch > min(height, width):
        raise SanityError(f"occlusion: patch {patch} is larger than the {height}x{width} image; choose a smaller one")
    base = tf.constant(channel_baseline("occlusion", baseline, channels))
    row_starts, col_starts = patch_starts(height, patch, stride), patch_starts(width, patch, stride)
    rows, cols = (a.ravel() for a in np.meshgrid(row_starts, col_starts, indexing="ij"))
    coverage = np.zeros((height, width))
    for r, c in zip(rows, cols):
        coverage[r:r + patch, c:c + patch] += 1
    fn = traced(model, ("occlusion", output), options, lambda jit: _occlusion_function(model, output, jit))
    clean = target_scores(model, images, targets, output, options)
    per_call, spans = blocks(len(rows), options.batch_size)
    maps = np.zeros((len(images), height, width), np.float64)
    for i in range(0, len(images), per_call):
        x, c, t = (tf.constant(a[i:i + per_call]) for a in (images, clean, targets))
        for first, stop in spans:
            maps[i:i + per_call] += fn(x, c, t, tf.constant(rows[first:stop]), tf.constant(cols[first:stop]),
                                       tf.constant(patch), base).numpy()
    maps /= coverage
    return np.broadcast_to(maps[..., None], images.shape).astype(np.float32)
