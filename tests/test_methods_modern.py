"""The methods after the paper (LRP, DeepLIFT, DeconvNet, Grad-CAM++, occlusion, RISE, and PAIR's XRAI, Blur IG and
Guided IG) on tiny Keras models, against hand computations: numpy forward/backward passes, closed forms on linear
models, conservation identities, and PAIR's own output with a GradientTape call_model_function.
"""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from sanity_cli.errors import SanityError  # noqa: E402
from sanity_cli.methods import EngineOptions, explain, explain_many, get  # noqa: E402
from sanity_cli.methods import pair  # noqa: E402


def _close(got, want, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=rtol, atol=atol)


def _relu(v):
    return np.maximum(v, 0.0)


def _gradient_x_input(model, images, targets):
    """x ⊙ d f_c / d x with an eager GradientTape (independent of the engine)."""
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = tf.gather(model(x, training=False), targets, axis=1, batch_dims=1)
    return images * tape.gradient(score, x).numpy()


def _logit(model, images, targets):
    return model.predict_on_batch(images)[np.arange(len(images)), targets]


def _linear_model(shape, classes=3, seed=0, bias=True):
    """f(x) = W^T flatten(x) + b, W and b set explicitly."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(int(np.prod(shape)), classes)).astype(np.float32)
    b = rng.normal(size=classes).astype(np.float32)
    inputs = keras.Input(shape)
    dense = keras.layers.Dense(classes, use_bias=bias, name="logits")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)), name="linear")
    dense.set_weights([w, b] if bias else [w])
    return model, w, b


def _conv_chain(sequential: bool, seed: int = 0, bias: bool = False):
    """Conv2D-ReLU, max pooling, Conv2D-ReLU, average pooling, Flatten, Dense-ReLU, Dense: a ReLU chain with every
    layer type LRP has a rule for."""
    keras.utils.set_random_seed(seed)
    layers = [keras.layers.Conv2D(4, 3, padding="same", activation="relu", use_bias=bias, name="conv1"),
              keras.layers.MaxPooling2D(name="max"),
              keras.layers.Conv2D(5, 3, padding="same", use_bias=bias, name="conv2"),
              keras.layers.ReLU(name="relu2"),
              keras.layers.AveragePooling2D(2, name="avg"),
              keras.layers.Dropout(0.5, name="drop"),
              keras.layers.Flatten(name="flat"),
              keras.layers.Dense(12, activation="relu", use_bias=bias, name="fc"),
              keras.layers.Dense(4, use_bias=bias, name="logits")]
    if sequential:
        return keras.Sequential([keras.Input((8, 8, 2)), *layers], name="chain")
    x = inputs = keras.Input((8, 8, 2))
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name="chain")


def _images(shape, n=5, low=None, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, *shape)) if low == 0 else rng.normal(size=(n, *shape))
    return x.astype(np.float32)


# ------------------------------------------------------------------------------------------------------ LRP

@pytest.mark.parametrize("sequential", [False, True])
def test_lrp_epsilon_to_zero_is_gradient_times_input_on_a_bias_free_relu_net(sequential):
    model = _conv_chain(sequential)
    images = _images((8, 8, 2))
    targets = np.array([0, 1, 2, 3, 0], np.int32)
    got = explain(model, images, targets, "lrp_epsilon", {"epsilon": 1e-9})
    assert got.shape == images.shape and got.dtype == np.float32
    _close(got, _gradient_x_input(model, images, targets), rtol=1e-4, atol=1e-6)
    # epsilon 0 where whole receptive fields are 0 (z = 0 exactly): 0 relevance there, not NaN
    blank = images.copy()
    blank[:, :4, :4] = 0
    _close(explain(model, blank, targets, "lrp_epsilon", {"epsilon": 0.0}), _gradient_x_input(model, blank, targets),
           rtol=1e-4, atol=1e-6)
    # the weights are read when the traced function runs: after an in-place change the identity still holds
    model.get_layer("conv2").kernel.assign(model.get_layer("conv2").kernel * -1.5)
    _close(explain(model, images, targets, "lrp_epsilon", {"epsilon": 1e-9}),
           _gradient_x_input(model, images, targets), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind,params", [("lrp_zplus", {}), ("lrp_alpha_beta", {"alpha": 1.0, "beta": 0.0})])
@pytest.mark.parametrize("low", [0, None])
def test_lrp_zplus_and_alpha_beta_1_0_conserve_the_logit(kind, params, low):
    """Bias-free ReLU net: every neuron with relevance is active, so its positive contributions z+ are > 0 and
    each layer passes on all of its relevance: sum_i R_i = f_c(x). With [0, 1] inputs (low=0) z+ is the deep Taylor
    a_i w_ij^+ at the first layer too; with signed inputs the positive contributions a_i^- w_ij^- count as well."""
    model = _conv_chain(False, seed=3)
    images = _images((8, 8, 2), n=6, low=low, seed=4)
    targets = np.array([0, 1, 2, 3, 0, 1], np.int32)
    maps = explain(model, images, targets, kind, params)
    logits = _logit(model, images, targets)
    assert np.all(np.abs(logits) > 1e-3)
    _close(maps.reshape(len(maps), -1).sum(axis=1), logits, rtol=1e-4, atol=1e-5)
    for m, v in zip(maps, logits):  # positive contributions only: every pixel's relevance has the logit's sign
        assert (m * np.sign(v) >= -1e-6).all()


def _numpy_lrp(x, layers, c, rule, epsilon=0.0, alpha=1.0, beta=0.0):
    """LRP of a Dense chain (ReLU between layers) written out per connection: z_ij = a_i w_ij."""
    activations = [x]
    for k, (w, b) in enumerate(layers):
        z = activations[-1] @ w + b
        activations.append(z if k == len(layers) - 1 else _relu(z))
    relevance = np.zeros_like(activations[-1])
    relevance[c] = activations[-1][c]
    for (w, b), a in zip(reversed(layers), reversed(activations[:-1])):
        z_ij = a[:, None] * w
        if rule == "epsilon":
            z = z_ij.sum(0) + b
            relevance = (z_ij / (z + epsilon * np.where(z >= 0, 1, -1))) @ relevance
        else:
            pos, neg = np.maximum(z_ij, 0), np.minimum(z_ij, 0)
            if rule == "zplus":
                relevance = (pos / (pos.sum(0) + 1e-9)) @ relevance
            else:
                relevance = (alpha * (pos / (pos.sum(0) + np.maximum(b, 0) + 1e-9))
                             - beta * (neg / (neg.sum(0) + np.minimum(b, 0) - 1e-9))) @ relevance
    return relevance


@pytest.mark.parametrize("kind,params,rule", [
    ("lrp_epsilon", {"epsilon": 0.5}, "epsilon"),
    ("lrp_zplus", {}, "zplus"),
    ("lrp_alpha_beta", {"alpha": 2.0, "beta": 1.0}, "alpha_beta"),
    ("lrp_alpha_beta", {"alpha": 1.0, "beta": 0.0}, "alpha_beta"),
])
def test_lrp_rules_equal_a_numpy_pass_per_connection(kind, params, rule):
    """A Dense chain with biases and signed inputs, every rule written out with z_ij = a_i w_ij."""
    rng = np.random.default_rng(5)
    sizes = [12, 7, 6, 3]
    layers = [(rng.normal(size=(m, n)).astype(np.float32), rng.normal(size=n).astype(np.float32) * 0.5)
              for m, n in zip(sizes, sizes[1:])]
    inputs = keras.Input((3, 4, 1))
    x = keras.layers.Flatten()(inputs)
    dense = [keras.layers.Dense(n, activation="relu" if k < 2 else None) for k, n in enumerate(sizes[1:])]
    for layer in dense:
        x = layer(x)
    model = keras.Model(inputs, x)
    for layer, (w, b) in zip(dense, layers):
        layer.set_weights([w, b])
    images = _images((3, 4, 1), n=4, seed=6)
    targets = np.array([0, 1, 2, 1], np.int32)
    got = explain(model, images, targets, kind, params)
    want = np.stack([_numpy_lrp(x.ravel().astype(np.float64), layers, c, rule, **params).reshape(x.shape)
                     for x, c in zip(images, targets)])
    _close(got, want, rtol=1e-4, atol=1e-5)


def test_lrp_folds_batch_normalization_into_the_convolution_before_it():
    """Conv2D -> BatchNormalization -> ReLU explains like the one Conv2D with W s and (b - mu) s + beta."""
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)

    def build(with_bn):
        inputs = keras.Input((6, 6, 2))
        x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
        if with_bn:
            x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Flatten()(x)
        return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))

    model, folded = build(True), build(False)
    kernel, bias = [rng.normal(size=v.shape).astype(np.float32) for v in model.get_layer("conv").weights]
    gamma, beta, mean = (rng.normal(size=3).astype(np.float32) for _ in range(3))
    variance = rng.uniform(0.5, 2.0, 3).astype(np.float32)
    model.get_layer("conv").set_weights([kernel, bias])
    model.get_layer("bn").set_weights([gamma, beta, mean, variance])
    scale = gamma / np.sqrt(variance + model.get_layer("bn").epsilon)
    folded.get_layer("conv").set_weights([kernel * scale, (bias - mean) * scale + beta])
    for name in ("logits",):
        folded.get_layer(name).set_weights(model.get_layer(name).get_weights())
    images = _images((6, 6, 2), n=3, seed=8)
    targets = np.array([0, 1, 2], np.int32)
    _close(model.predict_on_batch(images), folded.predict_on_batch(images), atol=1e-5)
    for kind, params in [("lrp_epsilon", {"epsilon": 0.01}), ("lrp_zplus", {}),
                         ("lrp_alpha_beta", {"alpha": 2.0, "beta": 1.0})]:
        _close(explain(model, images, targets, kind, params), explain(folded, images, targets, kind, params),
               rtol=1e-4, atol=1e-5)


def _layer_norm_model():
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Dense(3, name="fc")(keras.layers.Flatten()(inputs))
    x = keras.layers.LayerNormalization(name="norm")(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def _lstm_model():
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.LSTM(3, name="recurrent")(keras.layers.Reshape((4, 4))(inputs))
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def _branch_model():
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Add(name="join")([keras.layers.Dense(3)(x), keras.layers.Dense(3)(x)])
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def _bn_after_relu_model():
    return keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3, activation="relu"),
                             keras.layers.BatchNormalization(name="late_bn"), keras.layers.Flatten(),
                             keras.layers.Dense(2)])


def _softmax_model():
    return keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(2, activation="softmax", name="probs")])


@pytest.mark.parametrize("kind", ["lrp_epsilon", "lrp_zplus", "lrp_alpha_beta", "deeplift"])
@pytest.mark.parametrize("build,fragments", [
    (_layer_norm_model, ["layer 'norm' (LayerNormalization)", "no rule"]),
    (_lstm_model, ["layer 'recurrent' (LSTM)", "no rule"]),
    (_branch_model, ["not a chain", "layer 'join'", "2 inputs"]),
    (_bn_after_relu_model, ["layer 'late_bn' (BatchNormalization)", "cannot be folded"]),
    (_softmax_model, ["layer 'probs' (Dense)", "activation 'softmax'"]),
])
def test_a_layer_without_a_rule_is_one_line_naming_it(kind, build, fragments):
    model = build()
    images = _images((4, 4, 1), n=2)
    if kind == "deeplift" and build is _bn_after_relu_model:
        explain(model, images, np.zeros(2, np.int32), kind)  # DeepLIFT takes BatchNormalization anywhere
        return
    with pytest.raises(SanityError) as err:
        explain(model, images, np.zeros(2, np.int32), kind)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{kind}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_lrp_alpha_beta_requires_alpha_minus_beta_one():
    model, _, _ = _linear_model((2, 2, 1))
    with pytest.raises(SanityError, match="alpha - beta must be 1"):
        explain(model, _images((2, 2, 1), n=1), np.zeros(1, np.int32), "lrp_alpha_beta", {"alpha": 2.0, "beta": 0.0})


# ------------------------------------------------------------------------------------------------- DeepLIFT

@pytest.mark.parametrize("params,input_range,reference", [
    ({"baseline": 0.3}, None, 0.3), ({"baseline": "zeros"}, None, 0.0), ({"baseline": "black"}, (-1, 1), -1.0),
    ({}, None, 0.0)])
def test_deeplift_of_a_linear_model_is_delta_times_weights(params, input_range, reference):
    model, w, _ = _linear_model((3, 4, 2))
    images = _images((3, 4, 2))
    targets = np.array([0, 1, 2, 0, 1], np.int32)
    got = explain(model, images, targets, "deeplift", params, input_range=input_range)
    _close(got, (images - reference) * w[:, targets].T.reshape(images.shape), atol=1e-5)


def _one_hidden_layer(bias: bool, seed=9):
    rng = np.random.default_rng(seed)
    w1, w2 = rng.normal(size=(12, 10)).astype(np.float32), rng.normal(size=(10, 3)).astype(np.float32)
    b1, b2 = (rng.normal(size=n).astype(np.float32) if bias else np.zeros(n, np.float32) for n in (10, 3))
    model = keras.Sequential([keras.Input((3, 2, 2)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="relu", use_bias=bias),
                              keras.layers.Dense(3, use_bias=bias)])
    model.layers[1].set_weights([w1, b1] if bias else [w1])
    model.layers[2].set_weights([w2, b2] if bias else [w2])
    return model, w1, b1, w2, b2


def test_deeplift_with_a_zero_baseline_is_gradient_times_input_on_a_bias_free_relu_net():
    """Reference activations are all 0, so each ReLU's multiplier relu(z) / z is its gradient [z > 0]."""
    model, w1, _, w2, _ = _one_hidden_layer(bias=False)
    images = _images((3, 2, 2), n=6)
    targets = np.array([0, 1, 2, 0, 1, 2], np.int32)
    flat = images.reshape(len(images), -1)
    want = flat * (((flat @ w1) > 0)[:, :, None] * w1.T[None] * w2[:, targets].T[:, :, None]).sum(axis=1)
    _close(explain(model, images, targets, "deeplift", {"baseline": "zeros"}), want.reshape(images.shape),
           rtol=1e-5, atol=1e-5)


def test_deeplift_rescale_multipliers_with_biases_and_a_baseline():
    """m = W1 diag((relu(z) - relu(z')) / (z - z')) w2_c, and the map sums to f_c(x) - f_c(x')."""
    model, w1, b1, w2, b2 = _one_hidden_layer(bias=True)
    images = _images((3, 2, 2), n=6, seed=10)
    targets = np.array([0, 1, 2, 0, 1, 2], np.int32)
    x, x_ref = images.reshape(len(images), -1).astype(np.float64), np.full(12, 0.25)
    z, z_ref = x @ w1 + b1, x_ref @ w1 + b1
    ratio = (_relu(z) - _relu(z_ref)) / (z - z_ref)
    want = (x - x_ref) * ((w1[None] * ratio[:, None, :]) @ w2[:, targets].T[:, :, None])[..., 0]
    got = explain(model, images, targets, "deeplift", {"baseline": 0.25})
    _close(got, want.reshape(images.shape), rtol=1e-4, atol=1e-5)
    delta = _logit(model, images, targets) - _logit(model, np.full_like(images, 0.25), targets)
    _close(got.reshape(len(got), -1).sum(axis=1), delta, rtol=1e-4, atol=1e-5)


def test_deeplift_sums_to_delta_through_conv_avgpool_tanh_and_batchnorm():
    keras.utils.set_random_seed(11)
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, activation="tanh"),
                              keras.layers.AveragePooling2D(2), keras.layers.BatchNormalization(),
                              keras.layers.Activation("softplus"), keras.layers.Flatten(),
                              keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)])
    bn = model.layers[2]
    bn.set_weights([np.full(3, 1.5, np.float32), np.full(3, 0.2, np.float32), np.full(3, 0.1, np.float32),
                    np.full(3, 2.0, np.float32)])
    images = _images((6, 6, 2), n=4, seed=12)
    targets = np.array([0, 1, 2, 0], np.int32)
    got = explain(model, images, targets, "deeplift", {"baseline": -0.5})
    delta = _logit(model, images, targets) - _logit(model, np.full_like(images, -0.5), targets)
    _close(got.reshape(len(got), -1).sum(axis=1), delta, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------ DeconvNet

def _deconv_net():
    """Dense-ReLU (activation), Dense, ReLU (layer), Dense with explicit weights; biases push some hidden units
    below 0, where Guided Backprop's forward mask cuts a positive gradient that DeconvNet passes."""
    rng = np.random.default_rng(13)
    weights = [rng.normal(size=(8, 6)), rng.normal(size=6) - 0.5, rng.normal(size=(6, 5)), rng.normal(size=5) - 0.5,
               rng.normal(size=(5, 3)), rng.normal(size=3)]
    weights = [w.astype(np.float32) for w in weights]
    model = keras.Sequential([keras.Input((2, 2, 2)), keras.layers.Flatten(),
                              keras.layers.Dense(6, activation="relu"), keras.layers.Dense(5),
                              keras.layers.ReLU(), keras.layers.Dense(3)])
    model.set_weights(weights)
    return model, weights


def _numpy_backward(weights, x, c, rule):
    w1, b1, w2, b2, w3, _ = (np.asarray(w, np.float64) for w in weights)
    z1 = x @ w1 + b1
    z2 = _relu(z1) @ w2 + b2
    g = w3[:, c]
    g = g * (g > 0) * (1.0 if rule == "deconvnet" else (z2 > 0))
    g = w2 @ g
    g = g * (g > 0) * (1.0 if rule == "deconvnet" else (z1 > 0))
    return w1 @ g


def test_deconvnet_equals_a_numpy_backward_pass_and_differs_from_guided_backprop():
    model, weights = _deconv_net()
    images = _images((2, 2, 2), n=6, seed=14)
    targets = np.array([0, 1, 2, 0, 1, 2], np.int32)
    flat = images.reshape(len(images), -1).astype(np.float64)
    for rule, kind in (("deconvnet", "deconvnet"), ("guided", "guided_backprop")):
        want = np.stack([_numpy_backward(weights, x, c, rule) for x, c in zip(flat, targets)])
        _close(explain(model, images, targets, kind), want.reshape(images.shape), atol=1e-5)
    deconv = explain(model, images, targets, "deconvnet")
    guided = explain(model, images, targets, "guided_backprop")
    assert np.abs(deconv - guided).max() > 0.1  # the forward mask matters on these images
    assert get("deconvnet").uses_guided_relu and get("deconvnet").gradient_based


def test_deconvnet_shares_calls_with_other_recipes_and_keeps_its_own_rule():
    model, _ = _deconv_net()
    images = _images((2, 2, 2), n=4, seed=15)
    targets = np.array([0, 1, 2, 0], np.int32)
    requests = [(kind, kind, None, 0) for kind in ("gradient", "deconvnet", "guided_backprop", "gradient_x_input")]
    together = explain_many(model, images, targets, requests)
    for kind, _, _, _ in requests:
        _close(together[kind], explain(model, images, targets, kind), atol=1e-6)
    smooth = explain(model, images, targets, "smoothgrad", {"base": "deconvnet", "samples": 3, "sigma": 0.1})
    assert smooth.shape == images.shape and np.isfinite(smooth).all()


# ------------------------------------------------------------------------------------------------ Grad-CAM++

def test_gradcam_plus_plus_equals_its_formula_on_a_tiny_conv_net():
    keras.utils.set_random_seed(16)
    inputs = keras.Input((5, 5, 2))
    conv = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")
    dense = keras.layers.Dense(4, name="logits")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(conv(inputs))))
    images = _images((5, 5, 2), n=4, seed=17)
    targets = np.array([0, 1, 2, 3], np.int32)
    got = explain(model, images, targets, "gradcam_plus_plus", {"layer": "conv"})
    activations = keras.Model(inputs, conv.output).predict_on_batch(images).astype(np.float64)
    w = dense.get_weights()[0].astype(np.float64)
    for a, c, cam in zip(activations, targets, got):
        g = w[:, c].reshape(a.shape)                          # d Y_c / d A: the Dense weights, Flatten's order
        denominator = 2 * g ** 2 + a.sum(axis=(0, 1)) * g ** 3
        alpha = np.divide(g ** 2, denominator, out=np.zeros_like(g), where=denominator != 0)
        weights = (alpha * _relu(g)).sum(axis=(0, 1))
        want = _relu((weights * a).sum(axis=-1))               # 5x5 -> 5x5: the upsampling is the identity
        _close(cam, np.broadcast_to(want[..., None], cam.shape), rtol=1e-4, atol=1e-6)
    assert np.abs(got).max() > 0
    assert get("gradcam_plus_plus").needs_conv_layer
    with pytest.raises(SanityError, match="gradcam_plus_plus: layer 'logits' is not a conv layer"):
        explain(model, images, targets, "gradcam_plus_plus", {"layer": "logits"})
    with pytest.raises(SanityError, match="set method.gradcam_plus_plus.layer"):
        explain(model, images, targets, "gradcam_plus_plus")


# ------------------------------------------------------------------------------------------- occlusion, RISE

def test_occlusion_with_1x1_patches_and_a_zero_baseline_is_x_times_w():
    model, w, _ = _linear_model((4, 5, 1))
    images = _images((4, 5, 1))
    targets = np.array([0, 1, 2, 0, 1], np.int32)
    want = images * w[:, targets].T.reshape(images.shape)
    for batch_size in (7, 1000):  # a few occluded copies per call, or every image's copies in one call
        got = explain(model, images, targets, "occlusion", {"patch": 1, "stride": 1, "baseline": "zeros"},
                      options=EngineOptions(batch_size=batch_size))
        _close(got, want, atol=1e-5)


def test_occlusion_averages_the_drop_over_the_patches_covering_a_pixel():
    """2x2 patches every 2 pixels on 5x6 images (the last row of patches at the border), baseline 0.5, two
    channels occluded together: a loop over the patches."""
    model, w, _ = _linear_model((5, 6, 2))
    images = _images((5, 6, 2), n=3)
    targets = np.array([2, 0, 1], np.int32)
    got = explain(model, images, targets, "occlusion", {"patch": 2, "stride": 2, "baseline": 0.5},
                  options=EngineOptions(batch_size=10))
    for x, c, m in zip(images, targets, got):
        contribution = (x - 0.5) * w[:, c].reshape(x.shape)
        total, count = np.zeros((5, 6)), np.zeros((5, 6))
        for r in (0, 2, 3):
            for s in (0, 2, 4):
                total[r:r + 2, s:s + 2] += contribution[r:r + 2, s:s + 2].sum()
                count[r:r + 2, s:s + 2] += 1
        _close(m, np.broadcast_to((total / count)[..., None], m.shape), atol=1e-5)


def _smooth_linear_model(size=14):
    """f(x) = W^T flatten(x) + b with each class's weights a smooth bump, so that x ⊙ w (x in [0.5, 1]) varies
    slowly next to RISE's cells."""
    yy, xx = np.mgrid[0:size, 0:size]
    w = np.stack([np.exp(-((yy - a) ** 2 + (xx - b) ** 2) / (2 * 3.0 ** 2)).ravel()
                  for a, b in [(3, 4), (9, 10), (7, 3)]], axis=1).astype(np.float32)
    inputs = keras.Input((size, size, 1))
    dense = keras.layers.Dense(3)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([w, np.array([0.5, -1.0, 2.0], np.float32)])
    images = (0.5 + 0.5 * np.random.default_rng(22).uniform(size=(3, size, size, 1))).astype(np.float32)
    return model, w, images


def test_rise_converges_to_x_times_w_on_a_linear_model_and_is_seeded():
    """For f(x) = w . x + b, E[S] = (1/p) E[M M^T] (x ⊙ w) + b: x ⊙ w seen through the masks' correlation (a blur
    of about a cell: 2 pixels, the default 7x7 grid on 14x14 images), plus a constant."""
    model, w, images = _smooth_linear_model()
    targets = np.array([0, 1, 2], np.int32)
    got = explain(model, images, targets, "rise", {"masks": 10000}, seed=3)
    want = images * w[:, targets].T.reshape(images.shape)
    for m, x_w in zip(got, want):
        assert np.corrcoef(m.ravel(), x_w.ravel())[0, 1] > 0.9
    params = {"masks": 600, "cell": 3}
    few = explain(model, images, targets, "rise", params, seed=3)
    assert np.array_equal(explain(model, images, targets, "rise", params, seed=3), few)
    _close(explain(model, images, targets, "rise", params, seed=3, options=EngineOptions(batch_size=250)), few,
           rtol=1e-4, atol=1e-5)
    assert not np.allclose(explain(model, images, targets, "rise", params, seed=4), few)
    # probability 1: every mask is all ones, so S = f_c(x) at every pixel
    ones = explain(model, images, targets, "rise", {"masks": 7, "probability": 1.0}, seed=3)
    _close(ones, np.broadcast_to(_logit(model, images, targets)[:, None, None, None], images.shape), atol=1e-5)


# ---------------------------------------------------------------------------------- PAIR's XRAI, Blur IG, Guided IG

def _tape_call_model_function(model):
    """PAIR's call_model_function written directly with a GradientTape: gradients of the target logit."""
    from saliency.core.base import INPUT_OUTPUT_GRADIENTS

    def call(x_value_batch, call_model_args=None, expected_keys=None):
        x = tf.constant(np.asarray(x_value_batch, np.float32))
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = model(x, training=False)[:, call_model_args["target"]]
        return {INPUT_OUTPUT_GRADIENTS: tape.gradient(score, x).numpy()}

    return call


@pytest.fixture(scope="module")
def small_cnn():
    keras.utils.set_random_seed(20)
    model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(3)])
    images = _images((12, 12, 3), n=2, low=0, seed=21)
    return model, images, np.array([0, 2], np.int32)


def test_xrai_blur_ig_and_guided_ig_equal_pair_with_a_tape(small_cnn):
    from saliency.core import XRAI, BlurIG, GuidedIG, XRAIParameters

    model, images, targets = small_cnn
    call = _tape_call_model_function(model)
    baseline = np.full(images.shape[1:], 0.2, np.float32)
    cases = [
        ("xrai", {"steps": 6},
         lambda x, args: XRAI().GetMask(x, call, call_model_args=args, batch_size=4,
                                        extra_parameters=XRAIParameters(steps=6))),
        ("blur_ig", {"steps": 6, "max_sigma": 3.0},
         lambda x, args: BlurIG().GetMask(x, call, call_model_args=args, max_sigma=3.0, steps=6, batch_size=4)),
        ("guided_ig", {"steps": 8, "baseline": 0.2},
         lambda x, args: GuidedIG().GetMask(x, call, call_model_args=args, x_baseline=baseline, x_steps=8)),
    ]
    for kind, params, reference in cases:
        got = explain(model, images, targets, kind, params, options=EngineOptions(batch_size=4))
        assert got.shape == images.shape and got.dtype == np.float32
        with pair.numpy_compat():
            want = [np.asarray(reference(x, {"target": int(c)}), np.float64) for x, c in zip(images, targets)]
        want = np.stack([np.broadcast_to(m[..., None], images.shape[1:]) if m.ndim == 2 else m for m in want])
        _close(got, want, rtol=1e-4, atol=1e-5)
        assert np.abs(got).max() > 0, kind


# --------------------------------------------------------------------------------------------------- configs

NEW = ["lrp_epsilon", "lrp_zplus", "lrp_alpha_beta", "deeplift", "deconvnet", "gradcam_plus_plus", "occlusion",
       "rise", "xrai", "blur_ig", "guided_ig"]


def test_each_new_config_names_its_registered_method_and_its_parameters():
    """configs/method/NAME.yaml composes alone, names kind NAME, and its parameters resolve (checked, 'black' turned
    into the model's black pixel) against the registered method."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from sanity_cli import config
    from sanity_cli.methods import resolve_params

    assert set(NEW) <= set(config.group_choices()["method"])
    for name in NEW:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(config.config_dir()), version_base="1.3"):
                cfg = compose(config_name="sanity", overrides=[f"method=[{name}]", "budget=smoke"])
        finally:
            GlobalHydra.instance().clear()
        (key,) = cfg.method
        params = OmegaConf.to_container(cfg.method[key], resolve=True)
        assert key == name and params.pop("kind") == name
        spec = get(name)
        assert set(params) <= set(spec.parameters())
        resolved = resolve_params(name, spec, params, (0.0, 1.0))
        assert resolved.get("baseline", 0.0) in ("zeros", 0.0)   # smoke's IG baseline 'black' is 0 for [0, 1]


def test_the_registry_still_imports_without_tensorflow():
    code = ("import sys; import sanity_cli.methods as m; "
            f"assert set({NEW!r}) <= set(m.REGISTRY); "
            "assert not {'tensorflow', 'keras', 'saliency'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
