"""DeepLIFT with the rescale rule (Shrikumar et al. 2017, "Learning important features through propagating activation
differences").

DL(x) = (x - x') ⊙ m(x), m the multipliers of the target logit: the chain rule through the model's chain
(layerwise.chain) where every elementwise nonlinearity y = f(z) has the multiplier
    m = (f(z) - f(z')) / (z - z')   (f'((z + z') / 2) where |z - z'| < 1e-5),
z' its input when the reference x' (the baseline) runs through the model; linear layers (Dense, Conv2D, average
pooling, BatchNormalization) keep their weights, and max pooling its gradient (the DeepLIFT code's default
'gradient' mode). Without max pooling, the map sums to f_c(x) - f_c(x') (summation-to-delta). A modified gradient:
the reference's activations run once (one image), then one forward and backward pass per chunk of images, one traced
function per model.
"""

from __future__ import annotations

import numpy as np

from .registry import register
from .declared import BASELINE
from .engine import chunked
from .traced import channel_baseline, traced

NEAR = 1e-5  # |z - z'| below which the multiplier is the derivative at the midpoint


def _rescaled(f, z, z_ref):
    """f(z), its backward pass multiplying by the rescale multiplier instead of f'(z)."""
    import tensorflow as tf

    @tf.custom_gradient
    def forward(z):
        y = f(z)

        def grad(upstream):
            delta = z - z_ref
            near = tf.abs(delta) < NEAR
            middle = (z + z_ref) / 2
            with tf.GradientTape() as tape:
                tape.watch(middle)
                y_middle = f(middle)
            slope = tape.gradient(y_middle, middle)
            secant = (y - f(z_ref)) / tf.where(near, tf.ones_like(delta), delta)
            return upstream * tf.where(near, slope, secant)

        return y, grad

    return forward(z)


def _multipliers_times_delta(steps, x, targets, baseline):
    import tensorflow as tf

    reference = tf.zeros_like(x[:1]) + baseline
    references, a = [], reference
    for step in steps:
        z = step.pre(a)
        references.append(z)
        a = step.post(z)
    with tf.GradientTape() as tape:
        tape.watch(x)
        a = x
        for step, z_ref in zip(steps, references):
            z = step.pre(a)
            a = z if step.act is None else _rescaled(step.post, z, z_ref)
        score = tf.gather(a, targets, axis=1, batch_dims=1)
    return (x - reference) * tape.gradient(score, x)


@register("deeplift", params={"baseline": BASELINE})
def deeplift(model, images, targets, *, baseline, options, seed=0) -> np.ndarray:
    """DeepLIFT-rescale: (x - x') ⊙ m, m the rescale rule's multipliers of the target logit; x' = `baseline`
    ('zeros', 'black' (the model's black pixel) or a number, or one per channel)."""
    from .layerwise import chain

    images = np.asarray(images, np.float32)
    base = channel_baseline("deeplift", baseline, images.shape[-1])

    def build(jit: bool):
        import tensorflow as tf

        steps = chain(model, "deeplift", lrp=False)

        @tf.function(input_signature=(tf.TensorSpec([None, *model.input_shape[1:]], tf.float32),
                                      tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32)),
                     jit_compile=jit, autograph=False)
        def deeplift_fn(x, targets, baseline):
            return _multipliers_times_delta(steps, x, targets, baseline)

        return deeplift_fn

    fn = traced(model, ("deeplift",), options, build)
    import tensorflow as tf

    base = tf.constant(base)
    return chunked(lambda xs, ts: (fn(tf.constant(xs), tf.constant(ts), base).numpy(),), options.batch_size, images,
                    np.asarray(targets, np.int32))[0]
