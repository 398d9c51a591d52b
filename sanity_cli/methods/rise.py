"""RISE, randomized input sampling for explanation (Petsiuk et al. 2018, BMVC)."""

from __future__ import annotations

import math

import numpy as np

from ..params import Int, Number
from .declared import OUTPUT
from .occlusion import blocks
from .passes import select
from .registry import register
from .traced import traced


def _rise_function(model, cell: int, grid: tuple[int, int], output: str, jit: bool):
    """fn(x, targets, grids (m, gh, gw), shifts (m, 2)) -> (B, H, W): sum_i f_c(x ⊙ M_i) M_i over the given
    masks, each grid upsampled bilinearly to (gh + 1) cell x (gw + 1) cell and cropped at its shift."""
    import tensorflow as tf

    height, width, channels = model.input_shape[1:]
    upsampled = ((grid[0] + 1) * cell, (grid[1] + 1) * cell)
    spec = tf.TensorSpec

    @tf.function(input_signature=(spec([None, height, width, channels], tf.float32), spec([None], tf.int32),
                                  spec([None, *grid], tf.float32), spec([None, 2], tf.int32)),
                 jit_compile=jit, autograph=False)
    def rise_fn(x, targets, grids, shifts):
        up = tf.image.resize(grids[..., None], upsampled, method="bilinear")[..., 0]
        up = tf.gather(up, shifts[:, :1] + tf.range(height)[None], axis=1, batch_dims=1)
        masks = tf.gather(up, shifts[:, 1:] + tf.range(width)[None], axis=2, batch_dims=1)      # (m, H, W)
        count = tf.shape(masks)[0]
        masked = x[:, None] * masks[None, ..., None]
        logits = model(tf.reshape(masked, [-1, height, width, channels]), training=False)
        scores = tf.reshape(select(logits, tf.repeat(targets, count), output), [-1, count])
        return tf.einsum("bm,mhw->bhw", scores, masks)

    return rise_fn


def draw_masks(seed, count: int, probability: float, grid: tuple[int, int], cell: int):
    """The binary grids (count, gh, gw), 1 with `probability`, and crop shifts (count, 2) in [0, cell), from
    numpy's default_rng(seed): the same masks for every image."""
    rng = np.random.default_rng(list(np.atleast_1d(seed).astype(int)))
    grids = (rng.random((count, *grid)) < probability).astype(np.float32)
    return grids, rng.integers(0, cell, size=(count, 2)).astype(np.int32)


@register("rise", params={"masks": Int(2000, low=1), "probability": Number(0.5, gt=0, high=1),
                         "cell": Int(None, low=1, nullable=True), "output": OUTPUT})
def rise(model, images, targets, *, masks: int, probability: float, cell: int | None, output: str, options,
         seed=0) -> np.ndarray:
    """S(x) = 1 / (N p) sum_i f_c(x ⊙ M_i) M_i over N random masks: binary grids of cells of `cell` pixels (1 with
    `probability` p), bilinearly upsampled and randomly shifted (default cell: a 7x7 grid, as the paper's on 224
    pixels). The masks come from rng(seed); the same map on every channel. f_c is the target's logit (the paper
    used the softmax probability: output=probability). Batched: many masked copies of many images per call."""
    import tensorflow as tf

    images = np.asarray(images, np.float32)
    targets = np.asarray(targets, np.int32)
    height, width = images.shape[1:3]
    count = masks
    cell = math.ceil(min(height, width) / 7) if cell is None else cell
    grid = (math.ceil(height / cell), math.ceil(width / cell))
    grids, shifts = draw_masks(seed, count, float(probability), grid, cell)
    fn = traced(model, ("rise", cell, grid, output), options,
                lambda jit: _rise_function(model, cell, grid, output, jit))
    per_call, spans = blocks(count, options.batch_size)
    maps = np.zeros((len(images), height, width), np.float64)
    for i in range(0, len(images), per_call):
        x, t = tf.constant(images[i:i + per_call]), tf.constant(targets[i:i + per_call])
        for first, stop in spans:
            maps[i:i + per_call] += fn(x, t, tf.constant(grids[first:stop]), tf.constant(shifts[first:stop])).numpy()
    maps /= count * float(probability)
    return np.broadcast_to(maps[..., None], images.shape).astype(np.float32)
