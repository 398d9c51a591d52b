"""The modified ReLU backward passes of Guided Backprop (Springenberg et al. 2014) and DeconvNet (Zeiler & Fergus
2014), swapped into a model only while a tf.function traces, so the modified graph shares the model's variables."""

from __future__ import annotations

import contextlib
import functools

from ..errors import SanityError
from ..randomize import leaf_layers


@functools.cache
def guided_relu():
    """ReLU whose backward pass keeps only positive gradients where the forward input was positive."""
    import tensorflow as tf

    @tf.custom_gradient
    def relu(x):
        y = tf.nn.relu(x)

        def grad(upstream):
            return upstream * tf.cast(upstream > 0, upstream.dtype) * tf.cast(x > 0, upstream.dtype)

        return y, grad

    return relu


@functools.cache
def deconvnet_relu():
    """ReLU whose backward pass keeps only positive gradients, ignoring the forward input (Zeiler & Fergus 2014)."""
    import tensorflow as tf

    @tf.custom_gradient
    def relu(x):
        def grad(upstream):
            return upstream * tf.cast(upstream > 0, upstream.dtype)

        return tf.nn.relu(x), grad

    return relu


# A recipe's ReLU backward rule (Recipe.relu_backward): the gradient, Guided Backprop's or DeconvNet's.
RELU_RULES = ("gradient", "guided", "deconvnet")
_SWAPS = {"guided": ("guided_backprop", "guided backprop", guided_relu),
          "deconvnet": ("deconvnet", "deconvnet", deconvnet_relu)}


def _is_relu(fn) -> bool:
    import keras

    return fn is keras.activations.relu or getattr(fn, "__name__", "") == "relu"


@contextlib.contextmanager
def swapped_relus(model, rule: str = "guided"):
    """Temporarily swap every ReLU of `model` for `guided_relu` (or `deconvnet_relu` with rule='deconvnet'): ReLU
    activations inside layers (Dense/Conv `activation='relu'`, `Activation('relu')`) and `ReLU` layers. Used only
    while a tf.function traces, so the guided graph shares the model's variables."""
    import keras

    method, described, relu_fn = _SWAPS[rule]
    swapped: list[tuple[object, str, object]] = []
    try:
        for layer in leaf_layers(model):
            if isinstance(layer, keras.layers.ReLU):
                if layer.negative_slope or layer.max_value is not None or layer.threshold:
                    raise SanityError(f"{method}: layer '{layer.name}' is a leaky/capped ReLU; "
                                      f"{described} is defined for plain ReLUs only")
                swapped.append((layer, "call", layer.__dict__.get("call")))
                object.__setattr__(layer, "call", lambda inputs, *a, **k: relu_fn()(inputs))
            elif _is_relu(getattr(layer, "activation", None)):
                swapped.append((layer, "activation", layer.activation))
                object.__setattr__(layer, "activation", relu_fn())
        yield
    finally:
        for layer, attr, old in reversed(swapped):
            if attr == "call" and old is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, attr, old)
