"""The noise of the noise tunnels (SmoothGrad, VarGrad) and of sMPRT's noisy copies: stateless Philox normals seeded
per image, drawn on the device, so a map depends on the run's seed and the image's index only (not on the batch
size, chunking, XLA or the device beyond float rounding). Public TensorFlow APIs only."""

from __future__ import annotations

import functools

import numpy as np

PHILOX = 1  # tf.random.Algorithm.PHILOX


def image_seeds(seed, n: int) -> np.ndarray:
    """(n, 2) int32 seeds of the stateless noise of images 0..n-1: numpy's SeedSequence(seed + [i]), so each
    image's noise depends on the run's seed (a number or a list) and its index only. Read-only; remembered, as
    the stages of a run ask for the same ones (~45 us per image) unless a method reseeds per stage."""
    return _image_seeds(tuple(int(v) for v in np.atleast_1d(seed)), int(n))


@functools.lru_cache(maxsize=64)
def _image_seeds(seed: tuple, n: int) -> np.ndarray:
    seeds = np.stack([np.random.SeedSequence([*seed, i]).generate_state(2) for i in range(n)]).view(np.int32)
    seeds.flags.writeable = False
    return seeds


def standard_normal(shape, seed):
    """N(0, 1) draws from stateless Philox bits (tensor `seed`, 2 int32) by Box-Muller on 24-bit uniforms
    (k + 1/2) 2^-24 (in (0, 1] after float32 rounding). TensorFlow's own stateless_normal turns the same Philox
    bits into floats differently under XLA; this makes the noise the same with and without `jit_compile` (and on
    CPU and GPU) up to float32 rounding of log and cos."""
    return noise_block(seed, shape[0], 0, shape[0], shape[1:])


def noise_block(seed, total: int, first, count: int, shape):
    """Draws first..first+count-1 of standard_normal([total, *shape], seed), (count, *shape), without drawing the
    others: Philox is a counter-based generator, so the bits of any range are reached by advancing its counter
    (element i of a draw comes from counter + i // 4, lane i % 4; the same under XLA). `first` may be a tensor."""
    import tensorflow as tf

    size = int(np.prod(shape))
    key, counter = philox_key_counter(seed)

    def bits(start):
        """count * size uint32 from element `start` of the draw of 2 * total * size."""
        start = tf.cast(start, tf.int64)
        at = tf.concat([counter[:1] + tf.cast(start // 4, tf.uint64), counter[1:]], 0)
        block = tf.raw_ops.StatelessRandomUniformFullIntV2(shape=[count * size + 3], key=key, counter=at, alg=PHILOX,
                                                           dtype=tf.uint32)
        return tf.slice(block, tf.reshape(tf.cast(start % 4, tf.int32), [1]), [count * size])

    def uniform(b):
        return (tf.cast(tf.bitwise.right_shift(b, 8), tf.float32) + 0.5) * (2.0 ** -24)

    offset = tf.cast(first, tf.int64) * size
    u0, u1 = uniform(bits(offset)), uniform(bits(total * size + offset))
    return tf.reshape(tf.sqrt(-2.0 * tf.math.log(u0)) * tf.cos((2 * np.pi) * u1), [count, *shape])


def unit_noise(seeds, samples: int, shape) -> np.ndarray:
    """The standard normal draws behind a noise tunnel, (n, samples, *shape): what `Recipe.samples` adds, before
    scaling by sigma (max x - min x). For checks against peers fed the same noise."""
    import tensorflow as tf

    return tf.map_fn(lambda s: standard_normal([samples, *shape], s), tf.constant(seeds),
                     fn_output_signature=tf.float32).numpy()




def philox_key_counter(seed):
    """The Philox key and counter that tf.random.stateless_uniform(alg="philox") derives from a seed (2 int32): the
    seed scrambled by one Philox draw under a fixed key, as TensorFlow's kernels do (its GetKeyCounter op would
    auto-select another algorithm's state under XLA)."""
    import tensorflow as tf

    key = tf.constant([0x02461E293EC8F720], tf.uint64)
    mix = tf.raw_ops.StatelessRandomUniformFullIntV2(shape=[4], key=key, counter=tf.cast(seed, tf.uint64),
                                                     alg=PHILOX, dtype=tf.uint32)

    def uint64(pair):
        return tf.bitwise.bitwise_or(tf.cast(pair[0], tf.uint64),
                                     tf.bitwise.left_shift(tf.cast(pair[1], tf.uint64), tf.constant(32, tf.uint64)))

    return tf.reshape(uint64(mix[:2]), [1]), tf.stack([tf.constant(0, tf.uint64), uint64(mix[2:])])
