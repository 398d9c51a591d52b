"""One batched gradient call per chunk, inside a tf.function traced once per model, input shape and mode.

All methods are built on `GradientEngine.gradients`: d f_c / d x for a batch of inputs, where f_c is the
target class's pre-softmax logit (output='logit', the paper's choice) or its softmax probability.
Weights are read from the model's variables at call time, so in-place randomization never retraces.
TensorFlow is imported where gradients are taken, not when this module is: the config checks that list
the methods and their parameters run without it.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..errors import SanityError
from ..randomize import leaf_layers

if TYPE_CHECKING:
    import keras

OUTPUTS = ("logit", "probability")
# XLA compilation of the traced functions (config `jit_compile`, set by the pipeline for each run). Off by default:
# on a 2-core CPU it was 2.1x slower for the MNIST CNN (README, "Performance"). XLA rounds differently, so maps
# differ slightly (a ReLU near zero may flip): within 1e-5 in the tests, up to 7.5e-4 for SmoothGrad-50.
JIT_COMPILE = False


def set_jit_compile(enabled: bool) -> None:
    global JIT_COMPILE
    JIT_COMPILE = bool(enabled)


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


def _is_relu(fn) -> bool:
    import keras

    return fn is keras.activations.relu or getattr(fn, "__name__", "") == "relu"


@contextlib.contextmanager
def guided_relus(model: keras.Model):
    """Temporarily swap every ReLU of `model` for `guided_relu`: ReLU activations inside layers
    (Dense/Conv `activation='relu'`, `Activation('relu')`) and `ReLU` layers. Used only while a
    tf.function traces, so the guided graph shares the model's variables."""
    import keras

    swapped: list[tuple[object, str, object]] = []
    try:
        for layer in leaf_layers(model):
            if isinstance(layer, keras.layers.ReLU):
                if layer.negative_slope or layer.max_value is not None or layer.threshold:
                    raise SanityError(f"guided_backprop: layer '{layer.name}' is a leaky/capped ReLU; "
                                      "guided backprop is defined for plain ReLUs only")
                swapped.append((layer, "call", layer.__dict__.get("call")))
                object.__setattr__(layer, "call", lambda inputs, *a, **k: guided_relu()(inputs))
            elif _is_relu(getattr(layer, "activation", None)):
                swapped.append((layer, "activation", layer.activation))
                object.__setattr__(layer, "activation", guided_relu())
        yield
    finally:
        for layer, attr, old in reversed(swapped):
            if attr == "call" and old is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, attr, old)


def _select(outputs, targets, output: str):
    import tensorflow as tf

    if output == "probability":
        outputs = tf.nn.softmax(outputs, axis=-1)
    return tf.gather(outputs, targets, axis=1, batch_dims=1)


class GradientEngine:
    """Batched gradients of one model. Get it with `engine_for(model)`."""

    def __init__(self, model: keras.Model):
        import tensorflow as tf

        self.model = model
        self._functions: dict[tuple, Callable] = {}
        self._cam_models: dict[str, keras.Model] = {}
        # One signature for any batch size: each function is traced once per model.
        self._signature = (tf.TensorSpec([None, *model.input_shape[1:]], tf.float32),
                           tf.TensorSpec([None], tf.int32))

    def _function(self, output: str, guided: bool) -> Callable:
        if output not in OUTPUTS:
            raise SanityError(f"output must be one of {', '.join(OUTPUTS)}, got '{output}'")
        key = ("grad", output, guided, JIT_COMPILE)
        if key not in self._functions:
            import tensorflow as tf

            model = self.model

            @tf.function(input_signature=self._signature, jit_compile=JIT_COMPILE)
            def grad_fn(x, targets):
                with guided_relus(model) if guided else contextlib.nullcontext():
                    with tf.GradientTape() as tape:
                        tape.watch(x)
                        score = _select(model(x, training=False), targets, output)
                    return tape.gradient(score, x)

            self._functions[key] = grad_fn
        return self._functions[key]

    def gradients(self, x: np.ndarray, targets: np.ndarray, *, output: str = "logit", guided: bool = False,
                  batch_size: int = 256) -> np.ndarray:
        """d f_c / d x for every row of x, in chunks of `batch_size` through one traced function."""
        import tensorflow as tf

        fn = self._function(output, guided)
        return _chunked(lambda xs, ts: fn(tf.constant(xs), tf.constant(ts)).numpy(), x, targets, batch_size)

    def predict_logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        import tensorflow as tf

        key = ("logits", JIT_COMPILE)
        if key not in self._functions:
            model = self.model
            self._functions[key] = tf.function(lambda xs: model(xs, training=False),
                                               input_signature=self._signature[:1], jit_compile=JIT_COMPILE)
        fn = self._functions[key]
        return _chunked(lambda xs, _: fn(tf.constant(xs)).numpy(), x, np.zeros(len(x), np.int32), batch_size)

    def conv_layer_names(self) -> list[str]:
        return conv_layer_names(self.model)

    def gradcam(self, x: np.ndarray, targets: np.ndarray, layer: str, *, output: str = "logit",
                batch_size: int = 256) -> np.ndarray:
        """Grad-CAM maps (N,H,W): ReLU(sum_k alpha_k A^k), alpha_k = mean_ij d f_c/d A^k_ij, bilinear upsampling."""
        import keras
        import tensorflow as tf

        valid = self.conv_layer_names()
        if layer not in valid:
            raise SanityError(f"gradcam: layer '{layer}' is not a conv layer of {self.model.name}; "
                              f"valid layers: {', '.join(valid) or 'none (the model has no conv layer)'}")
        key = ("gradcam", layer, output, JIT_COMPILE)
        if key not in self._functions:
            cam_model = _activations_and_outputs(self.model, layer)
            height, width = self.model.input_shape[1:3]

            @tf.function(input_signature=self._signature, jit_compile=JIT_COMPILE)
            def cam_fn(x, targets):
                with tf.GradientTape() as tape:
                    activations, outputs = cam_model(x, training=False)
                    score = _select(outputs, targets, output)
                grads = tape.gradient(score, activations)
                alpha = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
                cam = tf.nn.relu(tf.reduce_sum(alpha * activations, axis=-1, keepdims=True))
                return tf.image.resize(cam, (height, width), method="bilinear")[..., 0]

            self._cam_models[layer] = cam_model
            self._functions[key] = cam_fn
        fn = self._functions[key]
        return _chunked(lambda xs, ts: fn(tf.constant(xs), tf.constant(ts)).numpy(), x, targets, batch_size)


def conv_layer_names(model) -> list[str]:
    """Top-level layers with a 4-D (batch, height, width, channels) output, in model order: valid GradCAM layers
    (the last is the default for your own model)."""
    import keras

    return [layer.name for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer) and len(getattr(layer, "output", None).shape
                                                                      if hasattr(layer, "output") else ()) == 4]


def _activations_and_outputs(model, layer: str):
    """A callable x -> (the layer's activations, the model's outputs). For a Sequential whose layer is a nested
    model (a keras.applications base), whose own graph is not connected to the Sequential's input, the layers
    are called in order instead."""
    import keras

    if not isinstance(model, keras.Sequential):
        # the layer's output in this model's graph: the node of this graph where the layer is called (a layer, or
        # a base model called inside a functional wrapper, may also have been called in other graphs)
        target = model.get_layer(layer)
        graph = {id(node) for nodes in getattr(model, "_nodes_by_depth", {}).values() for node in nodes}
        tensors = [tensor for node in getattr(target, "_inbound_nodes", []) if id(node) in graph
                   for tensor in node.output_tensors]
        for tensor in tensors or [target.output]:
            try:
                return keras.Model(model.inputs, [tensor, model.outputs[0]])
            except ValueError:
                continue
        raise SanityError(f"gradcam: the output of layer '{layer}' is not connected to {model.name}'s input; "
                          f"set method.gradcam.layer to another layer")
    names = [item.name for item in model.layers]
    split = names.index(layer) + 1

    def call(x, training=False):
        for item in model.layers[:split]:
            x = item(x, training=training)
        activations = x
        for item in model.layers[split:]:
            x = item(x, training=training)
        return activations, x

    return call


def _chunked(call, x: np.ndarray, targets: np.ndarray, batch_size: int) -> np.ndarray:
    if batch_size < 1:
        raise SanityError(f"batch_size must be >= 1, got {batch_size}")
    x = np.asarray(x, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int32)
    parts = [call(x[i:i + batch_size], targets[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate(parts, axis=0).astype(np.float32, copy=False)


def engine_for(model: keras.Model) -> GradientEngine:
    """The model's engine (its traced functions are reused across calls, stages and methods). It lives on the
    model itself, so both are freed together."""
    engine = model.__dict__.get("_sanity_engine")
    if engine is None:
        engine = GradientEngine(model)
        object.__setattr__(model, "_sanity_engine", engine)
    return engine


def accumulate_over_points(grad_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
                           make_points: Callable[[np.ndarray, np.ndarray], np.ndarray],
                           n_images: int, n_points: int, batch_size: int,
                           weights: np.ndarray | None = None, second_moment: bool = False):
    """sum_p w_p g(image i, point p) (and sum_p w_p g^2 when second_moment) for every image i.

    The n_images x n_points (image, point) pairs are enumerated image-major and sent through
    `grad_fn(inputs, image_indices)` in chunks of `batch_size`, so memory stays bounded for any
    number of points and the result does not depend on batch_size (beyond float64 rounding, ~1e-16).
    """
    weights = np.full(n_points, 1.0 / n_points) if weights is None else np.asarray(weights, np.float64)
    total = n_images * n_points
    first = second = None
    for start in range(0, total, batch_size):
        pair = np.arange(start, min(total, start + batch_size))
        images, points = pair // n_points, pair % n_points
        grads = grad_fn(make_points(images, points), images).astype(np.float64)
        if first is None:
            first = np.zeros((n_images,) + grads.shape[1:])
            second = np.zeros_like(first) if second_moment else None
        weighted = weights[points].reshape((-1,) + (1,) * (grads.ndim - 1)) * grads
        # pairs are image-major, so each image is one run of rows: a grouped sum per run (np.add.at is unbuffered
        # and several times slower)
        starts = np.flatnonzero(np.r_[True, images[1:] != images[:-1]])
        first[images[starts]] += np.add.reduceat(weighted, starts, axis=0)
        if second_moment:
            second[images[starts]] += np.add.reduceat(weighted * grads, starts, axis=0)
    return first, second
