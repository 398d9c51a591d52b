"""Grad-CAM++ (Chattopadhay et al. 2018, "Grad-CAM++: generalized gradient-based visual explanations")."""

from __future__ import annotations

import numpy as np

from ..errors import SanityError
from .declared import LAYER
from .engine import activations_and_outputs, chunked, conv_layer_names
from .gradcam import _to_image_shape
from .passes import select
from .registry import register
from .traced import traced


def _cam_function(model, layer: str, jit: bool):
    """fn(x, targets) -> (B, H, W) Grad-CAM++ maps at `layer`, bilinearly upsampled."""
    import tensorflow as tf

    cam_model = activations_and_outputs(model, layer)
    height, width = model.input_shape[1:3]

    @tf.function(input_signature=(tf.TensorSpec([None, *model.input_shape[1:]], tf.float32),
                                  tf.TensorSpec([None], tf.int32)), jit_compile=jit, autograph=False)
    def cam_fn(x, targets):
        with tf.GradientTape() as tape:
            activations, outputs = cam_model(x, training=False)
            score = select(outputs, targets, "logit")
        g = tape.gradient(score, activations)
        activations = tf.cast(activations, tf.float32)
        g2 = tf.square(g)
        denominator = 2.0 * g2 + tf.reduce_sum(activations, axis=(1, 2), keepdims=True) * g2 * g
        alpha = tf.where(denominator != 0, g2 / tf.where(denominator != 0, denominator, 1.0), 0.0)
        weights = tf.reduce_sum(alpha * tf.nn.relu(g), axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1, keepdims=True))
        return tf.image.resize(cam, (height, width), method="bilinear")[..., 0]

    return cam_fn


@register("gradcam_plus_plus", params={"layer": LAYER}, needs_conv_layer=True)
def gradcam_plus_plus(model, images, targets, *, layer: str | None, options, seed=0) -> np.ndarray:
    """L = ReLU(sum_k w_k A^k), w_k = sum_ij alpha^k_ij ReLU(g^k_ij), g = d Y_c / d A (Y_c the target logit), with
    the closed form of the paper's exponential score S = exp(Y_c) (eq. 19, higher derivatives of Y_c taken as 0):
    alpha^k_ij = g_ij^2 / (2 g_ij^2 + sum_ab A^k_ab g_ij^3) (0 where the denominator is 0). S's factor exp(Y_c)
    scales each map by a positive constant and is left out (it overflows float32 for logits above 88). Bilinearly
    upsampled; the same map on every channel."""
    import tensorflow as tf

    if not layer:
        raise SanityError("gradcam_plus_plus: no layer given and the model declares no default conv layer; "
                          "set method.gradcam_plus_plus.layer=NAME")
    valid = conv_layer_names(model)
    if layer not in valid:
        raise SanityError(f"gradcam_plus_plus: layer '{layer}' is not a conv layer of {model.name}; "
                          f"valid layers: {', '.join(valid) or 'none (the model has no conv layer)'}")
    fn = traced(model, ("gradcam_plus_plus", layer), options, lambda jit: _cam_function(model, layer, jit))
    images = np.asarray(images, np.float32)
    cam = chunked(lambda xs, ts: (fn(tf.constant(xs), tf.constant(ts)).numpy(),), options.batch_size, images,
                   np.asarray(targets, np.int32))[0]
    return _to_image_shape(cam, images)
