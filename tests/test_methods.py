"""Numerical tests of the saliency methods (sanity_cli.methods) on tiny Keras models with known answers.

Every expected value is computed independently of the code under test (closed forms for linear models,
hand-written numpy backward passes for tiny ReLU nets, the Grad-CAM formula on the conv activations),
so the tests fail if a method computes the wrong number, not merely if it crashes.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from sanity_cli.errors import SanityError  # noqa: E402
from sanity_cli.methods import explain  # noqa: E402
from sanity_cli.methods.engine import Recipe, engine_for  # noqa: E402
from sanity_cli.methods.options import EngineOptions  # noqa: E402

SHAPE = (3, 4, 2)          # (H, W, C) of the linear model's input
D = int(np.prod(SHAPE))
K = 5                      # classes


def _close(got, want, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------- fixtures

def _linear_model(seed: int = 0):
    """f(x) = W^T flatten(x) + b with W (D, K), b (K,) set explicitly."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(D, K)).astype(np.float32)
    b = rng.normal(size=K).astype(np.float32)
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    dense = keras.layers.Dense(K, name="logits")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)), name="linear")
    dense.set_weights([w, b])
    return model, w, b


@pytest.fixture(scope="module")
def linear():
    return _linear_model(0)


@pytest.fixture(scope="module")
def linear_images():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(6, *SHAPE)).astype(np.float32)
    return images, (np.arange(len(images)) % K).astype(np.int32)


@pytest.fixture(scope="module")
def smooth_net():
    return _smooth_net()


def _smooth_net():
    """A small nonlinear, smooth (not piecewise-linear) net: the IG Riemann sum has a real error."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16, activation="tanh")(x)
    x = keras.layers.Dense(8, activation="softplus")(x)
    outputs = keras.layers.Dense(3)(x)
    model = keras.Model(inputs, outputs, name="smooth")
    # Larger weights than Glorot so that tanh saturates along the path (strong curvature).
    model.set_weights([w * 2.0 if w.ndim == 2 else w + 0.1 for w in model.get_weights()])
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 1, size=(5, 4, 4, 1)).astype(np.float32)
    targets = np.array([0, 1, 2, 0, 1], np.int32)
    return model, images, targets


def _flat(images):
    return images.reshape(len(images), -1).astype(np.float64)


# ------------------------------------------------------------------------------ 1. linear model: exact

def test_gradient_of_linear_model_is_weight_column(linear, linear_images):
    model, w, _ = linear
    images, _ = linear_images
    for c in range(K):
        targets = np.full(len(images), c, np.int32)
        got = explain(model, images, targets, "gradient")
        assert got.dtype == np.float32 and got.shape == images.shape
        _close(got, np.broadcast_to(w[:, c].reshape(SHAPE), images.shape), atol=1e-6)


def test_gradient_x_input_of_linear_model(linear, linear_images):
    model, w, _ = linear
    images, targets = linear_images
    want = w[:, targets].T.reshape(images.shape) * images
    _close(explain(model, images, targets, "gradient_x_input"), want, atol=1e-6)


@pytest.mark.parametrize("rule,steps", [("midpoint", 1), ("midpoint", 3), ("trapezoid", 2), ("trapezoid", 4),
                                        ("left", 1), ("left", 3), ("pair", 1), ("pair", 4)])
def test_integrated_gradients_of_linear_model_is_weight_times_input(linear, linear_images, rule, steps):
    model, w, _ = linear
    images, targets = linear_images
    want = w[:, targets].T.reshape(images.shape) * images
    got = explain(model, images, targets, "integrated_gradients", {"steps": steps, "rule": rule})
    _close(got, want, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 4, 10])
def test_integrated_gradients_left_rule_is_a_left_riemann_sum(smooth_net, steps):
    """rule=left: (x - x') * (1/m) sum_{k=0}^{m-1} grad f(x' + (k/m)(x - x')), written out by hand."""
    model, images, targets = smooth_net
    engine = engine_for(model)
    total = np.zeros_like(images, dtype=np.float64)
    for k in range(steps):
        total += engine.gradients(images * (k / steps), targets)
    want = images * total / steps
    got = explain(model, images, targets, "integrated_gradients", {"steps": steps, "rule": "left"})
    _close(got, want, atol=1e-6)


@pytest.mark.parametrize("steps", [2, 5])
def test_integrated_gradients_pair_rule_is_pairs_getmask(smooth_net, steps):
    """rule=pair: PAIR saliency's GetMask, the code the paper ran: np.linspace(0, 1, steps) path points,
    gradients summed and divided by steps."""
    model, images, targets = smooth_net
    engine = engine_for(model)
    total = np.zeros_like(images, dtype=np.float64)
    for alpha in np.linspace(0, 1, steps):
        total += engine.gradients(images * alpha, targets)
    got = explain(model, images, targets, "integrated_gradients", {"steps": steps, "rule": "pair"})
    _close(got, total * images / steps, atol=1e-6)
    midpoint = explain(model, images, targets, "integrated_gradients", {"steps": steps, "rule": "midpoint"})
    assert not np.allclose(got, midpoint, atol=1e-4)


def test_integrated_gradients_constant_baseline(linear, linear_images):
    model, w, _ = linear
    images, targets = linear_images
    want = w[:, targets].T.reshape(images.shape) * (images - 0.5)
    got = explain(model, images, targets, "integrated_gradients", {"steps": 3, "baseline": 0.5})
    _close(got, want, atol=1e-5)


def test_black_baseline_is_the_models_black_pixel_wherever_a_method_is_called(linear, linear_images):
    """baseline 'black' is the low end of the model's input range (-1 for Inception's [-1, 1]), also inside a
    noise tunnel; without the range it is an error, never a silent zero baseline."""
    model, _, _ = linear
    images, targets = linear_images
    black = explain(model, images, targets, "integrated_gradients", {"baseline": "black", "steps": 4},
                            input_range=(-1.0, 1.0))
    minus_one = explain(model, images, targets, "integrated_gradients", {"baseline": -1.0, "steps": 4})
    zeros = explain(model, images, targets, "integrated_gradients", {"baseline": "zeros", "steps": 4})
    np.testing.assert_array_equal(black, minus_one)
    assert not np.allclose(black, zeros)
    tunnel = {"base": "integrated_gradients", "samples": 2, "base_params": {"baseline": "black", "steps": 4}}
    np.testing.assert_array_equal(
        explain(model, images, targets, "smoothgrad", tunnel, input_range=(-1.0, 1.0)),
        explain(model, images, targets, "smoothgrad", dict(tunnel, base_params={"baseline": -1.0, "steps": 4})))
    assert "input_range" in _error(model, images, targets, "integrated_gradients", {"baseline": "black"})
    assert "input_range" in _error(model, images, targets, "smoothgrad", tunnel)


def test_smoothgrad_of_linear_model_is_weights_and_vargrad_is_zero(linear, linear_images):
    model, w, _ = linear
    images, targets = linear_images
    want = w[:, targets].T.reshape(images.shape)
    sg = explain(model, images, targets, "smoothgrad", {"samples": 7, "sigma": 0.5}, seed=4)
    _close(sg, want, atol=1e-5)
    vg = explain(model, images, targets, "vargrad", {"samples": 7, "sigma": 0.5}, seed=4)
    assert vg.shape == images.shape
    np.testing.assert_allclose(vg, 0.0, atol=1e-6)


def test_smoothgrad_noise_scale_is_sigma_times_input_range(linear):
    """Base gradient_x_input on a linear model: E(x + eps) = w ⊙ (x + eps), so SmoothGrad -> w ⊙ x and
    VarGrad -> w^2 * (sigma * (max x - min x))^2 (the documented noise scale)."""
    model, w, _ = linear
    rng = np.random.default_rng(5)
    image = rng.uniform(-1.0, 3.0, size=(1, *SHAPE)).astype(np.float32)
    span = float(image.max() - image.min())
    sigma, samples = 0.1, 4000
    wc = w[:, 2].reshape(SHAPE)
    params = {"base": "gradient_x_input", "samples": samples, "sigma": sigma}
    vg = explain(model, image, np.array([2]), "vargrad", params, options=EngineOptions(batch_size=4000))[0]
    ratio = vg / (wc ** 2 * (sigma * span) ** 2)
    assert np.all(np.abs(ratio - 1.0) < 0.15), ratio   # sample variance of 4000 normals: +-~7% at 3 sd
    sg = explain(model, image, np.array([2]), "smoothgrad", params, options=EngineOptions(batch_size=4000))[0]
    # mean of 4000 noise draws: std sigma*span/sqrt(4000); 5 sd bound on every pixel.
    bound = 5 * np.abs(wc) * sigma * span / np.sqrt(samples) + 1e-6
    assert np.all(np.abs(sg - wc * image[0]) <= bound)


# ------------------------------------------------------------------------ 2. IG completeness (nonlinear)

@pytest.mark.parametrize("rule", ["midpoint", "trapezoid"])
def test_integrated_gradients_completeness_error_shrinks_with_steps(smooth_net, rule):
    model, images, targets = smooth_net
    logits_x = model(images, training=False).numpy()
    logits_0 = model(np.zeros_like(images), training=False).numpy()
    rows = np.arange(len(images))
    delta = logits_x[rows, targets] - logits_0[rows, targets]
    assert np.all(np.abs(delta) > 0.1)  # the test is meaningless if f(x) ~ f(0)

    def error(steps):
        ig = explain(model, images, targets, "integrated_gradients", {"steps": steps, "rule": rule})
        return np.abs(_flat(ig).sum(1) - delta)

    coarse, fine = error(4), error(64)
    assert coarse.max() > 1e-3, coarse               # 4 steps really is inexact on this net
    assert np.all(fine < coarse), (coarse, fine)
    assert np.all(fine < 0.01 * np.abs(delta)), (fine, delta)
    # Both rules are O(1/steps^2): 256x smaller in theory (a left/right Riemann sum, O(1/steps), gives 16x).
    assert fine.mean() < 0.02 * coarse.mean(), (coarse, fine)


# ----------------------------------------------------------------------- 3. guided backprop by hand

HIDDEN, DIN, KOUT = 6, 6, 3


def _relu_net(style: str, api: str):
    """x (2,3,1) -> Dense(6) -> ReLU (in one of three styles) -> Dense(3); returns (model, dense1, dense2, relu)
    where relu is the layer holding the ReLU (dense1 itself for activation='relu')."""
    dense1 = keras.layers.Dense(HIDDEN, activation="relu" if style == "dense" else None, name="hidden")
    act = {"dense": [], "layer": [keras.layers.ReLU(name="relu")],
           "activation": [keras.layers.Activation("relu", name="relu")]}[style]
    dense2 = keras.layers.Dense(KOUT, name="logits")
    stack = [keras.layers.Flatten(), dense1, *act, dense2]
    if api == "sequential":
        model = keras.Sequential([keras.Input((2, 3, 1)), *stack])
    elif api == "functional":
        inputs = keras.Input((2, 3, 1))
        x = inputs
        for layer in stack:
            x = layer(x)
        model = keras.Model(inputs, x)
    else:  # nested: the ReLU lives in a sub-model of a functional model
        inputs = keras.Input((2, 3, 1))
        inner = keras.Sequential([keras.Input((DIN,)), dense1, *act], name="inner")
        model = keras.Model(inputs, dense2(inner(keras.layers.Flatten()(inputs))))
    relu = act[0] if act else dense1
    rng = np.random.default_rng(7)
    dense1.set_weights([rng.normal(size=(DIN, HIDDEN)).astype(np.float32),
                        rng.normal(size=HIDDEN).astype(np.float32)])
    dense2.set_weights([rng.normal(size=(HIDDEN, KOUT)).astype(np.float32),
                        rng.normal(size=KOUT).astype(np.float32)])
    return model, dense1, dense2, relu


def _hand_backprop(images, targets, w1, b1, w2, guided: bool):
    x = _flat(images)
    active = (x @ w1 + b1) > 0
    up = w2[:, targets].T.astype(np.float64)             # d logit_c / d relu output, (N, HIDDEN)
    if guided:
        up = up * (up > 0)
    return ((up * active) @ w1.T).reshape(images.shape)


@pytest.fixture(scope="module")
def relu_images():
    rng = np.random.default_rng(8)
    images = rng.normal(size=(8, 2, 3, 1)).astype(np.float32)
    return images, (np.arange(8) % KOUT).astype(np.int32)


@pytest.mark.parametrize("api", ["sequential", "functional", "nested"])
@pytest.mark.parametrize("style", ["dense", "layer", "activation"])
def test_guided_backprop_matches_hand_computation(style, api, relu_images):
    images, targets = relu_images
    model, dense1, dense2, relu = _relu_net(style, api)
    w1, b1 = (v.astype(np.float64) for v in dense1.get_weights())
    w2, _ = (v.astype(np.float64) for v in dense2.get_weights())
    want_guided = _hand_backprop(images, targets, w1, b1, w2, guided=True)
    want_plain = _hand_backprop(images, targets, w1, b1, w2, guided=False)
    assert np.abs(want_guided - want_plain).max() > 0.1   # the weights do make the two differ

    # guided first: the plain gradient traced afterwards must see the ReLUs restored.
    guided = explain(model, images, targets, "guided_backprop")
    _close(guided, want_guided, atol=1e-5)
    plain = explain(model, images, targets, "gradient")
    _close(plain, want_plain, atol=1e-5)
    assert np.abs(guided - plain).max() > 0.1
    assert "call" not in relu.__dict__                                   # the swap was undone
    if style != "layer":
        assert relu.activation is keras.activations.relu

    # in-place weight change (how the cascading randomization works): no rebuild, new numbers.
    rng = np.random.default_rng(9)
    new_w2 = rng.normal(size=w2.shape)
    new_b1 = rng.normal(size=b1.shape)
    dense2.kernel.assign(new_w2.astype(np.float32))
    dense1.bias.assign(new_b1.astype(np.float32))
    _close(explain(model, images, targets, "guided_backprop"),
           _hand_backprop(images, targets, w1, new_b1, new_w2, guided=True), atol=1e-5)
    _close(explain(model, images, targets, "gradient"),
           _hand_backprop(images, targets, w1, new_b1, new_w2, guided=False), atol=1e-5)


def test_guided_backprop_leaves_relu_activation_in_place(relu_images):
    images, targets = relu_images
    model, dense1, _, _ = _relu_net("dense", "functional")
    explain(model, images, targets, "guided_backprop")
    assert dense1.activation is keras.activations.relu
    # the model itself still computes plain ReLU forward and backward passes
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = tf.gather(model(x), targets, axis=1, batch_dims=1)
    _close(tape.gradient(score, x).numpy(), explain(model, images, targets, "gradient"), atol=1e-6)


# --------------------------------------------------------------------------------------- 4. Grad-CAM

def _cam_net(kind: str):
    keras.utils.set_random_seed(11)
    if kind in ("same", "same_sequential"):
        shape = (6, 6, 2)
        stack = [keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="conv"),
                 keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, name="logits")]
    elif kind == "valid":
        shape = (9, 9, 1)
        stack = [keras.layers.Conv2D(3, 3, padding="valid", activation="relu", name="conv"),
                 keras.layers.Flatten(), keras.layers.Dense(3, name="logits")]
    else:  # pooled: the conv layer sees a 4x4 map of an 8x8 input
        shape = (8, 8, 1)
        stack = [keras.layers.MaxPooling2D(2), keras.layers.Conv2D(2, 3, padding="same", activation="relu",
                                                                   name="conv"),
                 keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, name="logits")]
    if kind == "same_sequential":
        model = keras.Sequential([keras.Input(shape), *stack])
    else:
        inputs = keras.Input(shape)
        x = inputs
        for layer in stack:
            x = layer(x)
        model = keras.Model(inputs, x)
    rng = np.random.default_rng(12)
    conv, dense = model.get_layer("conv"), model.get_layer("logits")
    conv.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in conv.get_weights()])
    dense.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in dense.get_weights()])
    images = rng.uniform(-1, 1, size=(4, *shape)).astype(np.float32)
    return model, images, np.array([0, 1, 2, 1], np.int32)


def _hand_gradcam(model, images, targets, pooling: str, upsample: bool = True):
    conv = model.get_layer("conv")
    activations = keras.Model(model.inputs[0], conv.output)(images).numpy().astype(np.float64)  # (N,h,w,k)
    n, h, w, k = activations.shape
    wd = model.get_layer("logits").get_weights()[0].astype(np.float64)
    if pooling == "gap":
        grads = np.broadcast_to((wd[:, targets].T / (h * w))[:, None, None, :], activations.shape)
    else:  # flatten: d logit_c / d A = W_dense[:, c] in (h, w, k) order
        grads = wd[:, targets].T.reshape(n, h, w, k)
    alpha = grads.mean(axis=(1, 2), keepdims=True)
    cam = np.maximum((alpha * activations).sum(-1, keepdims=True), 0.0)
    height, width = images.shape[1:3]
    if (h, w) != (height, width) and upsample:
        cam = tf.image.resize(cam.astype(np.float32), (height, width), method="bilinear").numpy()
    return cam[..., 0]


def test_legacy_upsampling_is_tf1_resize_bilinear_without_half_pixel_centres():
    """upsampling=legacy: TensorFlow 1's resize_bilinear (align_corners=False, no half-pixel centres), as PAIR
    saliency 0.0.x upsampled the released notebooks' Grad-CAM: output pixel i samples the coarse map at i / 2, so on
    a 2x upsampling the even positions repeat the coarse map exactly and the odd ones average two neighbours."""
    model, images, targets = _cam_net("pooled")
    coarse = _hand_gradcam(model, images, targets, "gap", upsample=False)          # (N, h, w) at the conv layer
    fine = explain(model, images, targets, "gradcam", {"layer": "conv", "upsampling": "legacy"})[..., 0]
    assert fine.shape[1:] == (2 * coarse.shape[1], 2 * coarse.shape[2])
    _close(fine[:, ::2, ::2], coarse, atol=1e-5)
    _close(fine[:, 1:-1:2, ::2], (coarse[:, :-1] + coarse[:, 1:]) / 2, atol=1e-5)
    half_pixel = explain(model, images, targets, "gradcam", {"layer": "conv"})[..., 0]
    assert np.abs(fine - half_pixel).max() > 1e-3  # the two conventions differ


@pytest.mark.parametrize("kind,pooling", [("same", "gap"), ("same_sequential", "gap"),
                                          ("valid", "flatten"), ("pooled", "gap")])
def test_gradcam_matches_hand_computation(kind, pooling):
    model, images, targets = _cam_net(kind)
    want = _hand_gradcam(model, images, targets, pooling)
    assert want.max() > 0.02 and (want == 0).any()    # the CAM's ReLU both passes and clips somewhere
    got = explain(model, images, targets, "gradcam", {"layer": "conv"})
    assert got.shape == images.shape and got.dtype == np.float32
    for channel in range(images.shape[-1]):
        _close(got[..., channel], want, atol=1e-5)


def test_guided_gradcam_is_guided_backprop_times_gradcam():
    model, images, targets = _cam_net("same")
    cam = explain(model, images, targets, "gradcam", {"layer": "conv"})
    guided = explain(model, images, targets, "guided_backprop")
    plain = explain(model, images, targets, "gradient")
    assert np.abs(guided - plain).max() > 1e-3          # the conv's ReLU makes guided != plain
    got = explain(model, images, targets, "guided_gradcam", {"layer": "conv"})
    _close(got, guided * cam, atol=1e-6)
    assert np.abs(got).max() > 1e-3


def test_gradcam_probability_output_uses_softmax_score():
    """With output='probability', d p_c / d A = sum_j p_c (delta_cj - p_j) d logit_j / d A."""
    model, images, targets = _cam_net("same")
    logits = model(images).numpy().astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    conv = model.get_layer("conv")
    activations = keras.Model(model.inputs[0], conv.output)(images).numpy().astype(np.float64)
    wd = model.get_layer("logits").get_weights()[0].astype(np.float64)  # (k, classes)
    rows = np.arange(len(images))
    # d p_c / d logits = p_c (e_c - p); logits = mean_ij A @ wd -> alpha = wd @ that / (h*w) (uniform grads)
    dp = p[rows, targets][:, None] * (np.eye(3)[targets] - p)
    alpha = (dp @ wd.T) / (6 * 6)
    want = np.maximum((alpha[:, None, None, :] * activations).sum(-1), 0.0)
    got = explain(model, images, targets, "gradcam", {"layer": "conv", "output": "probability"})
    _close(got[..., 0], want, atol=1e-6)


# ------------------------------------------------------------ 5. the paper's one-layer theory model

def _edge_image(size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.zeros((size, size), np.float32)
    image[5:14, 4:15] = 1.0
    image[18:28, 16:29] = 0.6
    image[(yy - 9) ** 2 + (xx - 23) ** 2 < 25] = 0.8
    return image[None, ..., None]


def test_gradient_of_one_layer_conv_relu_sum_model_is_an_edge_detector():
    """Paper Sec. 5: for f(x) = sum_{p,k} relu(w_k . x_p + b_k) (one conv layer, ReLU, sum pooling), the
    gradient is df/dx = sum_{p,k} 1[w_k . x_p + b_k > 0] w_k placed at patch p: a sum of the filters gated
    by the ReLU activation pattern. Inside a flat region every patch is the same, so the gating is
    constant and a pixel's gradient is sum_k gate_k * (sum of w_k's taps); with zero-sum filters (no DC
    response, like edge detectors) that is exactly 0. The activation pattern only changes where the
    patches straddle an edge, so the gradient map is nonzero exactly at edges: it correlates with the
    Sobel edge map, not with noise. The biases make some filters active (others inactive) on flat
    regions, so the gating really does switch at edges rather than being all-off away from them."""
    size = 32
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 1, 8))
    kernel -= kernel.mean(axis=(0, 1, 2), keepdims=True)           # zero-sum filters
    bias = rng.uniform(-1.0, 0.5, size=8)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 1))
    conv = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")
    dense = keras.layers.Dense(1, name="sum")
    # GlobalAveragePooling * (H*W) via the Dense weight = sum pooling over positions and channels.
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(conv(inputs))))
    conv.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    dense.set_weights([np.full((8, 1), size * size, np.float32), np.zeros(1, np.float32)])

    image = _edge_image(size)
    target = np.zeros(1, np.int32)
    # the model really is sum_{p,k} relu(.)
    pre = keras.Model(inputs, conv.output)(image).numpy()
    _close(model(image).numpy()[0, 0], pre.sum(), rtol=1e-4)

    grad = np.abs(explain(model, image, target, "gradient"))[0, ..., 0]
    edges = explain(model, image, target, "sobel")[0, ..., 0]
    noise = np.abs(explain(model, image, target, "random", seed=0))[0, ..., 0]

    def corr(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    corr_edge, corr_random = corr(grad, edges), corr(grad, noise)
    assert corr_edge > 0.5, corr_edge
    assert corr_edge > corr_random + 0.4, (corr_edge, corr_random)
    # Away from edges (no edge within the 5x5 receptive field of the gradient) the gradient is exactly 0.
    # The 1-pixel image frame is excluded: a border pixel is covered by only part of each filter (the
    # patches centred outside the image do not exist), so the taps there do not sum to zero.
    flat = tf.nn.max_pool2d(edges[None, ..., None], 5, 1, "SAME").numpy()[0, ..., 0] == 0
    flat[[0, -1], :] = flat[:, [0, -1]] = False
    assert flat.sum() > 150
    assert np.abs(grad[flat]).max() < 1e-4
    assert grad[~flat].max() > 1.0


# ------------------------------------------------------------ 6. batching and seeds

@pytest.mark.parametrize("kind,params", [
    ("smoothgrad", {"base": "gradient", "samples": 4, "sigma": 0.2}),
    ("smoothgrad", {"base": "integrated_gradients", "samples": 3, "sigma": 0.2, "base_params": {"steps": 3}}),
    ("vargrad", {"base": "gradient", "samples": 4, "sigma": 0.2}),
])
def test_noise_methods_do_not_depend_on_batch_size_but_on_seed(smooth_net, kind, params):
    model, images, targets = smooth_net
    maps = [explain(model, images, targets, kind, params, options=EngineOptions(batch_size=b), seed=5)
            for b in (1, 7, 1000)]
    for other in maps[1:]:
        np.testing.assert_allclose(other, maps[0], atol=1e-5, rtol=1e-5)
    assert np.abs(maps[0]).max() > 1e-3
    again = explain(model, images, targets, kind, params, options=EngineOptions(batch_size=7), seed=5)
    np.testing.assert_allclose(again, maps[0], atol=1e-6)
    different = explain(model, images, targets, kind, params, options=EngineOptions(batch_size=7), seed=6)
    assert np.abs(different - maps[0]).max() > 1e-3


@pytest.mark.parametrize("kind", ["smoothgrad", "vargrad"])
def test_device_sums_match_float64_sums_of_the_same_passes(smooth_net, kind):
    """SmoothGrad-IG and VarGrad-IG (40 samples x 30 steps = 1200 passes per image) summed in float32 on the
    device (Kahan sums across blocks; VarGrad's variance by Chan et al.'s merge of per-block deviations), against
    the same noise and points' gradients summed in float64 here: within 1e-6 of each map's largest value at every
    batch size, batch 1 (1200 blocks in a while loop) included. (VarGrad as mean square - square mean in float32
    was off by 2.5e-6.)"""
    from sanity_cli.methods.noise import image_seeds, unit_noise
    from sanity_cli.methods.integrated_gradients import path_points

    model, images, targets = smooth_net
    samples, steps, sigma, seed = 40, 30, 0.3, 11
    alphas, weights = path_points(steps, "midpoint")
    noise = unit_noise(image_seeds(seed, len(images)), samples, images.shape[1:])
    engine = engine_for(model, EngineOptions(batch_size=4096))
    first, second = np.zeros(images.shape), np.zeros(images.shape)
    for i, image in enumerate(images):
        span = np.float32(sigma) * (image.max() - image.min())
        noisy = (image + span * noise[i]).astype(np.float32)                       # (samples, 4, 4, 1)
        points = (noisy[:, None] * alphas.astype(np.float32)[None, :, None, None, None]).reshape(-1, 4, 4, 1)
        grads = engine.gradients(points, np.full(len(points), targets[i]))
        maps = noisy * np.einsum("k,skhwc->shwc", weights, grads.reshape(samples, steps, 4, 4, 1).astype(np.float64))
        first[i], second[i] = maps.mean(0), (maps ** 2).mean(0)
    want = first if kind == "smoothgrad" else second - first ** 2
    scale = np.abs(want).reshape(len(images), -1).max(1).reshape(-1, 1, 1, 1)
    params = {"base": "integrated_gradients", "samples": samples, "sigma": sigma, "base_params": {"steps": steps}}
    for batch in (4096, 64, 7, 1):
        got = explain(model, images, targets, kind, params, options=EngineOptions(batch_size=batch), seed=seed)
        assert np.max(np.abs(got - want) / scale) < 1e-6, (batch, np.max(np.abs(got - want) / scale))


def test_smoothgrad_with_tiny_noise_is_the_gradient(smooth_net):
    model, images, targets = smooth_net
    grad = explain(model, images, targets, "gradient")
    sg = explain(model, images, targets, "smoothgrad", {"samples": 3, "sigma": 1e-6})
    _close(sg, grad, rtol=1e-3, atol=1e-4)
    vg = explain(model, images, targets, "vargrad", {"samples": 3, "sigma": 1e-6})
    np.testing.assert_allclose(vg, 0.0, atol=1e-6)


def test_batched_gradient_methods_equal_unbatched(smooth_net):
    model, images, targets = smooth_net
    for kind, params in [("gradient", {}), ("integrated_gradients", {"steps": 5}), ("guided_backprop", {})]:
        full = explain(model, images, targets, kind, params, options=EngineOptions(batch_size=1000))
        one = explain(model, images, targets, kind, params, options=EngineOptions(batch_size=1))
        three = explain(model, images, targets, kind, params, options=EngineOptions(batch_size=3))
        np.testing.assert_allclose(one, full, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(three, full, atol=1e-5, rtol=1e-5)


def test_random_control_is_deterministic_per_seed(linear, linear_images):
    model, _, _ = linear
    images, targets = linear_images
    a = explain(model, images, targets, "random", seed=3)
    assert a.shape == images.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, explain(model, images, targets, "random", seed=3))
    assert not np.allclose(a, explain(model, images, targets, "random", seed=4))
    assert not np.allclose(explain(model, images, targets, "random", seed=[0, 1, 0]),
                           explain(model, images, targets, "random", seed=[0, 2, 0]))
    assert abs(a.mean()) < 0.3 and 0.7 < a.std() < 1.3   # standard normal


def test_edge_controls_ignore_the_model_and_mark_edges():
    image = _edge_image(32)
    sobel = explain(None, image, np.zeros(1), "sobel")
    canny = explain(None, image, np.zeros(1), "canny", {"sigma": 1.0})
    assert sobel.shape == canny.shape == image.shape
    assert sobel[0, 0, 0, 0] == 0 and sobel[0, 5, 9, 0] > 0.1          # flat background vs top edge
    assert set(np.unique(canny)) == {0.0, 1.0}
    assert canny[0, 0, 0, 0] == 0 and canny[0, 9, 4:6, 0].max() == 1     # left edge of the first rectangle


# ----------------------------------------------------------- 7. probability vs logit

def test_probability_output_is_softmax_gradient(linear, linear_images):
    model, w, b = linear
    images, targets = linear_images
    x = _flat(images)
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    rows = np.arange(len(images))
    # d p_c / d x = p_c (w_c - sum_j p_j w_j)
    want = p[rows, targets][:, None] * (w[:, targets].T - p @ w.T)
    got = explain(model, images, targets, "gradient", {"output": "probability"})
    _close(got, want.reshape(images.shape), rtol=1e-4, atol=1e-6)
    logit = explain(model, images, targets, "gradient", {"output": "logit"})
    assert np.abs(got - logit).max() > 0.1
    ig = explain(model, images, targets, "integrated_gradients", {"steps": 3, "output": "probability"})
    assert np.abs(ig - explain(model, images, targets, "integrated_gradients", {"steps": 3})).max() > 0.1


# ---------------------------------------------------------------- 8. bad input -> one-line SanityError

def _error(*args, **kwargs) -> str:
    with pytest.raises(SanityError) as info:
        explain(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_bad_inputs_raise_one_line_sanity_errors(linear, linear_images):
    model, _, _ = linear
    images, targets = linear_images
    assert "gradient" in _error(model, images, targets, "no_such_method")
    for base in ("sobel", "gradcam", "random", "smoothgrad", "nope"):
        for kind in ("smoothgrad", "vargrad"):
            assert "guided_backprop" in _error(model, images, targets, kind, {"base": base})
    assert "steps" in _error(model, images, targets, "gradient", {"steps": 3})        # unknown parameter
    assert "stepz" in _error(model, images, targets, "integrated_gradients", {"stepz": 3})
    assert "steps" in _error(model, images, targets, "integrated_gradients", {"steps": 0})
    assert "steps" in _error(model, images, targets, "integrated_gradients", {"steps": 2.5})
    assert "trapezoid" in _error(model, images, targets, "integrated_gradients", {"rule": "simpson"})
    assert "samples" in _error(model, images, targets, "smoothgrad", {"samples": 0})
    assert "samples" in _error(model, images, targets, "vargrad", {"samples": 0})
    for sigma in (0, -0.1):
        assert "sigma" in _error(model, images, targets, "smoothgrad", {"sigma": sigma})
        assert "sigma" in _error(model, images, targets, "vargrad", {"sigma": sigma})
    assert "steps" in _error(model, images, targets, "smoothgrad",
                             {"base": "integrated_gradients", "samples": 2, "base_params": {"steps": 0}})
    assert "logit" in _error(model, images, targets, "gradient", {"output": "softmax"})
    assert "baseline" in _error(model, images, targets, "integrated_gradients", {"baseline": "white"})
    # shapes
    assert "(3, 4, 2)" in _error(model, np.zeros((2, 4, 3, 2)), np.zeros(2), "gradient")
    _error(model, np.zeros((2, 3, 4, 1)), np.zeros(2), "integrated_gradients")
    _error(model, np.zeros((3, 4, 2)), np.zeros(3), "gradient")                     # missing batch axis
    _error(model, images, targets[:-1], "gradient")
    with pytest.raises(SanityError, match="batch_size"):
        EngineOptions(batch_size=0)


def test_gradcam_layer_errors():
    model, images, targets = _cam_net("same")
    message = _error(model, images, targets, "gradcam", {"layer": "nope"})
    assert "nope" in message and "conv" in message                # lists the valid layers
    assert "conv" in _error(model, images, targets, "gradcam", {"layer": "logits"})   # a Dense layer
    assert "conv" in _error(model, images, targets, "guided_gradcam", {"layer": "logits"})
    _error(model, images, targets, "gradcam")                     # no layer at all
    _error(model, images, targets, "gradcam", {"layer": "conv", "steps": 3})


def test_unknown_base_param_is_a_sanity_error(linear, linear_images):
    model, _, _ = linear
    images, targets = linear_images
    assert "stepz" in _error(model, images, targets, "smoothgrad",
                             {"base": "integrated_gradients", "samples": 2, "base_params": {"stepz": 3}})


def test_target_class_out_of_range_is_a_sanity_error(linear, linear_images):
    model, _, _ = linear
    images, _ = linear_images
    assert str(K) in _error(model, images, np.full(len(images), K), "gradient")


# ------------------------------------------------------------------------------------ 9. tracing

def test_functions_trace_once_per_model_across_batches_and_weight_changes():
    model, w, _ = _linear_model(21)
    dense = model.get_layer("logits")
    rng = np.random.default_rng(22)
    images = rng.normal(size=(5, *SHAPE)).astype(np.float32)
    targets = np.array([0, 1, 2, 3, 4], np.int32)
    engine = engine_for(model)
    assert engine_for(model) is engine

    explain(model, images, targets, "gradient")
    explain(model, images, targets, "gradient")
    explain(model, images, targets, "gradient", options=EngineOptions(batch_size=2))          # batches of 2, 2, 1
    explain(model, images[:1], targets[:1], "gradient")
    explain(model, images, targets, "integrated_gradients", {"steps": 3})
    explain(model, images, targets, "integrated_gradients", {"steps": 3, "baseline": 0.5})  # a tensor input
    function = _traced(engine, Recipe())
    assert function.experimental_get_tracing_count() == 1
    ig = _traced(engine, Recipe(path=True, alphas=(1 / 6, 1 / 2, 5 / 6), weights=(1 / 3,) * 3))
    assert ig.experimental_get_tracing_count() == 1

    new_w = rng.normal(size=w.shape).astype(np.float32)
    dense.kernel.assign(new_w)
    got = explain(model, images, targets, "gradient")
    _close(got, new_w[:, targets].T.reshape(images.shape), atol=1e-6)   # new weights are read ...
    assert function.experimental_get_tracing_count() == 1             # ... without retracing
    dense.set_weights([w, np.zeros(K, np.float32)])
    _close(explain(model, images, targets, "gradient"), w[:, targets].T.reshape(images.shape), atol=1e-6)
    assert function.experimental_get_tracing_count() == 1

    explain(model, images, targets, "gradient", {"output": "probability"})
    explain(model, images, targets, "guided_backprop")
    explain(model, images, targets, "guided_backprop", options=EngineOptions(batch_size=3))
    assert _traced(engine, Recipe(output="probability")).experimental_get_tracing_count() == 1
    assert _traced(engine, Recipe(relu_rule="guided")).experimental_get_tracing_count() == 1
    assert function.experimental_get_tracing_count() == 1


def _traced(engine, recipe, batch_size=256):
    """The engine's traced function for `recipe` (created by the calls above, or now)."""
    count = len(engine._functions)
    function = engine._maps_function((recipe,), *recipe.blocks(batch_size)[1:])
    assert len(engine._functions) == count, "no function was traced for this recipe"
    return function


def test_gradcam_traces_once_and_follows_weight_changes():
    model, images, targets = _cam_net("same")
    explain(model, images, targets, "gradcam", {"layer": "conv"})
    explain(model, images, targets, "gradcam", {"layer": "conv"}, options=EngineOptions(batch_size=3))
    dense = model.get_layer("logits")
    kernel, bias = dense.get_weights()
    dense.kernel.assign(-kernel)
    got = explain(model, images, targets, "gradcam", {"layer": "conv"})
    _close(got[..., 0], _hand_gradcam(model, images, targets, "gap"), atol=1e-5)
    function = engine_for(model)._functions[("gradcam", "conv", "logit", "bilinear")]
    assert function.experimental_get_tracing_count() == 1


def test_maps_do_not_depend_on_batch_size_or_xla(monkeypatch):
    """Batch sizes 1, 7 and 512, with and without XLA (`jit_compile`): the same maps within 1e-5 relative (of each
    map's largest value), for every kind of gradient computation the methods use."""
    import keras

    from sanity_cli import architectures, methods

    keras.utils.set_random_seed(0)
    model = architectures.get("mnist_cnn").build()
    images = np.random.default_rng(0).random((9, 28, 28, 1), dtype=np.float32)
    targets = np.arange(9, dtype=np.int32) % 10
    cases = {"gradient": {}, "guided_backprop": {}, "gradcam": {"layer": "conv2"},
             "integrated_gradients": {"steps": 5}, "smoothgrad": {"base": "gradient", "samples": 4, "sigma": 0.15}}
    maps = {}
    for jit in (False, True):
        for batch in (1, 7, 512):
            for kind, params in cases.items():
                maps[kind, jit, batch] = methods.explain(model, images, targets, kind, params, seed=3,
                                                         options=EngineOptions(jit, "float32", batch))
    for kind in cases:
        reference = maps[kind, False, 512]
        scale = np.abs(reference).reshape(9, -1).max(axis=1).reshape(9, 1, 1, 1)
        assert (scale > 0).sum() >= 6, kind  # a random model's Grad-CAM map may be all zero (ReLU)
        scale = np.where(scale > 0, scale, 1.0)
        for (other_kind, jit, batch), other in maps.items():
            if other_kind == kind:
                assert np.max(np.abs(other - reference) / scale) <= 1e-5, (kind, jit, batch)
    assert {options.jit_compile for options in model._sanity_engines} == {False, True}  # XLA


def test_mixed_precision_computes_in_half_precision_and_follows_the_weights(smooth_net, monkeypatch):
    """precision=mixed_bfloat16 / mixed_float16: the passes run through a clone computing in 16 bits (its maps
    differ from float32's by more than float32 rounding, and stay close), and the clone takes the model's current
    weights at every call: negating the logits layer's kernel negates the gradient exactly."""

    model, images, targets = smooth_net
    reference = explain(model, images, targets, "gradient")
    scale = np.abs(reference).reshape(len(images), -1).max(1).reshape(-1, 1, 1, 1)
    kernel = model.layers[-1].kernel
    for precision in ("mixed_bfloat16", "mixed_float16"):
        half_options = EngineOptions(precision=precision)
        half = explain(model, images, targets, "gradient", options=half_options)
        error = np.max(np.abs(half - reference) / scale)
        assert 1e-4 < error < 0.1, (precision, error)
        kernel.assign(-kernel)
        try:
            np.testing.assert_allclose(explain(model, images, targets, "gradient", options=half_options), -half,
                                       rtol=1e-6, atol=1e-7)
        finally:
            kernel.assign(-kernel)
        sg = explain(model, images, targets, "smoothgrad", {"samples": 4}, options=half_options)
        assert np.isfinite(sg).all() and sg.dtype == np.float32
    np.testing.assert_array_equal(explain(model, images, targets, "gradient"), reference)  # nothing leaked
    with pytest.raises(SanityError, match="precision must be one of"):
        EngineOptions(precision="float8")


def test_methods_explained_together_share_model_calls_and_equal_their_own_maps():
    """methods.explain_many packs the gradient-based methods and noise tunnels whose passes per image fit in
    batch_size into one traced function (one forward+backward pass per chunk for all of them); each map equals the
    method explained on its own, the guided one runs in its own group, and a method with more passes per image
    than batch_size runs alone with its blocks looped."""
    from sanity_cli.methods import explain_many

    model, images, targets = _smooth_net()  # its own engine: no function traced by another test
    requests = [("g", "gradient", {}, 0), ("gp", "gradient", {"output": "probability"}, 0),
                ("gxi", "gradient_x_input", {}, 0), ("ig", "integrated_gradients", {"steps": 5}, 0),
                ("sg", "smoothgrad", {"samples": 4, "sigma": 0.2}, 3),
                ("sg_other_seed", "smoothgrad", {"samples": 4, "sigma": 0.3}, 4),
                ("vg", "vargrad", {"samples": 6, "base": "integrated_gradients", "base_params": {"steps": 3}}, 3),
                ("gb", "guided_backprop", {}, 0), ("sobel", "sobel", {}, 0)]
    for batch in (64, 7):
        engine = engine_for(model, EngineOptions(batch_size=batch))
        before = set(engine._functions)
        together = explain_many(model, images, targets, requests, options=EngineOptions(batch_size=batch))
        groups = [key[1] for key in set(engine._functions) - before if key[0] == "maps"]
        assert list(together) == [name for name, *_ in requests]
        for name, kind, params, seed in requests:
            alone = explain(model, images, targets, kind, params, options=EngineOptions(batch_size=batch), seed=seed)
            np.testing.assert_allclose(together[name], alone, rtol=1e-5, atol=1e-6, err_msg=f"{name} {batch}")
        if batch == 64:  # 1+1+1+5+4+4+18 = 34 passes per image: one group, and Guided Backprop's own
            assert sorted(len(g) for g in groups) == [1, 7], groups
        else:  # the 18-pass VarGrad-IG runs alone; the rest pack into calls of <= 7 passes per image
            assert any(len(g) == 1 and g[0].variance for g in groups) and max(len(g) for g in groups) >= 2
    assert not np.allclose(together["sg"], together["sg_other_seed"])


def test_logits_come_from_the_passes_that_send_the_images_themselves(monkeypatch):
    """explain_many(logits=True) returns the model's logits of the images: from the shared pass of a method that
    sends x itself through the model (Gradient, Guided Backprop), with no forward pass of its own; predicted when
    no method does (SmoothGrad alone, Grad-CAM)."""
    from sanity_cli.methods import explain_many

    model, images, targets = _smooth_net()
    expected = model(images, training=False).numpy()
    eng = engine_for(model)
    predicted = []
    real_predict = type(eng).predict_logits
    monkeypatch.setattr(type(eng), "predict_logits",
                        lambda self, x: predicted.append(len(x)) or real_predict(self, x))
    smoothgrad = ("sg", "smoothgrad", {"samples": 3, "sigma": 0.2}, 0)
    for requests, by_product in [([("g", "gradient", {}, 0), smoothgrad], True),
                                 ([smoothgrad, ("gb", "guided_backprop", {}, 0)], True),
                                 ([smoothgrad], False)]:
        for batch in (64, 3):
            predicted.clear()
            maps, logits = explain_many(model, images, targets, requests, options=EngineOptions(batch_size=batch),
                                        logits=True)
            np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6, err_msg=str(requests))
            assert predicted == ([] if by_product else [len(images)]), (requests, batch)
            assert list(maps) == [r[0] for r in requests]
    predicted.clear()  # a 16-bit clone's logits are not the model's
    _, logits = explain_many(model, images, targets, [("g", "gradient", {}, 0)],
                             EngineOptions(precision="mixed_bfloat16"), logits=True)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    assert predicted == [len(images)]


def test_mixed_precision_keeps_confident_probability_gradients_and_nested_layers(monkeypatch):
    """float16 underflows a softmax probability's gradient p_c (1[j = c] - p_j) once the logit gap passes ~17: the
    engine scales d score / d logits per row before it enters the 16-bit network. A nested model's layers compute
    in half precision too (the clone is recursive)."""
    from sanity_cli.randomize import leaf_layers

    keras.utils.set_random_seed(4)
    inner_in = keras.Input((4, 4, 1))
    inner = keras.Model(inner_in, keras.layers.Dense(8, activation="tanh")(keras.layers.Flatten()(inner_in)),
                        name="inner")
    model = keras.Sequential([keras.Input((4, 4, 1)), inner, keras.layers.Dense(3, name="logits")])
    kernel, bias = model.get_layer("logits").get_weights()
    model.get_layer("logits").set_weights([kernel, np.array([24.0, 0.0, 0.0], np.float32)])  # p_0 ~ 1 - 1e-10
    images = np.random.default_rng(5).uniform(0, 1, (4, 4, 4, 1)).astype(np.float32)
    targets = np.zeros(4, np.int32)
    reference = explain(model, images, targets, "gradient", {"output": "probability"})
    assert 0 < np.abs(reference).max() < 1e-8
    for precision in ("mixed_float16", "mixed_bfloat16"):
        half = explain(model, images, targets, "gradient", {"output": "probability"},
                       options=EngineOptions(precision=precision))
        scale = np.abs(reference).reshape(4, -1).max(1).reshape(4, 1, 1, 1)
        assert np.max(np.abs(half - reference) / scale) < 0.1, precision
        clone = engine_for(model, EngineOptions(precision=precision))._mixed[0]
        assert {layer.dtype_policy.name for layer in leaf_layers(clone) if layer.weights} == {precision}
