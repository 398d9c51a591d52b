"""Tests for sanity_cli.randomize: in-place, seeded, per-block re-initialisation and exact restore.

No training: models are built from a fixed Keras seed and every variable is then overwritten with
"trained-like" random values (nonzero biases, BN statistics away from 0/1), so that re-initialisation
is always visible.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from sanity_cli import models, randomize
from sanity_cli.errors import SanityError
from sanity_cli.randomize import Block
from sanity_cli.randomize import block_variables, derive_seed, randomize_block, restore, snapshot

TRUNCATED_NORMAL_STD_FACTOR = 0.8796  # std of N(0, 1) truncated to [-2, 2]


def _fake_train(model: keras.Model, seed: int = 123) -> None:
    """Overwrite every variable with values no initializer would produce (simulates trained weights)."""
    rng = np.random.default_rng(seed)
    for variable in model.variables:
        shape = tuple(variable.shape)
        if variable.path.endswith("moving_variance"):
            value = rng.uniform(2.0, 3.0, shape)
        else:
            value = rng.normal(0.05, 0.05, shape)
        variable.assign(value.astype(np.float32))


@pytest.fixture(scope="module")
def cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    return models.mnist_cnn()


@pytest.fixture
def trained_cnn(cnn) -> keras.Model:
    """The module's CNN with fresh fake-trained weights (the model object is shared, so the traced
    functions are too; each test starts from the same values)."""
    _fake_train(cnn)
    return cnn


def bn_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input(shape=(8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs, name="bn_model")
    _fake_train(model)
    return model


def _changed(before, after) -> set[int]:
    return {i for i, (b, a) in enumerate(zip(before, after, strict=True)) if not np.array_equal(b, a)}


def _indices(model: keras.Model, variables) -> set[int]:
    ids = {id(v) for v in variables}
    return {i for i, v in enumerate(model.variables) if id(v) in ids}


# ---------------------------------------------------------------------------------------------
# which variables change


@pytest.mark.parametrize("block_name", ["logits", "fc1", "conv2", "conv1"])
def test_randomize_block_changes_exactly_that_blocks_variables(trained_cnn, block_name):
    model = trained_cnn
    block = next(b for b in models.layer_blocks(model) if b.name == block_name)
    before = snapshot(model)
    count = randomize_block(model, block, seed=7)
    after = snapshot(model)
    expected = _indices(model, model.get_layer(block_name).trainable_variables)
    assert len(expected) == 2  # kernel and bias
    assert count == 2
    assert _changed(before, after) == expected


def test_block_variables_lists_trainable_variables_of_the_blocks_layers(trained_cnn):
    model = trained_cnn
    block = Block("top", ("logits", "fc1"))
    pairs = block_variables(model, block)
    assert [v.path for _, v in pairs] == ["logits/kernel", "logits/bias", "fc1/kernel", "fc1/bias"]
    assert [layer.name for layer, _ in pairs] == ["logits", "logits", "fc1", "fc1"]
    before = snapshot(model)
    assert randomize_block(model, block, seed=3) == 4
    assert _changed(before, snapshot(model)) == _indices(model, [v for _, v in pairs])


def test_cascading_randomization_then_restore_is_exact(trained_cnn):
    model = trained_cnn
    saved = snapshot(model)
    for index, block in enumerate(models.layer_blocks(model)):
        randomize_block(model, block, seed=derive_seed(0, 0, index))
    randomized = snapshot(model)
    assert _changed(saved, randomized) == set(range(len(model.variables)))
    restore(model, saved)
    for variable, value in zip(model.variables, saved, strict=True):
        assert np.array_equal(variable.numpy(), value), variable.path


def test_snapshot_is_a_copy(trained_cnn):
    model = trained_cnn
    saved = snapshot(model)
    reference = [np.array(a, copy=True) for a in saved]
    randomize_block(model, models.layer_blocks(model)[0], seed=1)
    for a, b in zip(saved, reference, strict=True):
        assert np.array_equal(a, b)


def test_restore_rejects_a_snapshot_of_another_length(trained_cnn):
    with pytest.raises(ValueError):
        restore(trained_cnn, snapshot(trained_cnn)[:-1])


# ---------------------------------------------------------------------------------------------
# seeding


@pytest.mark.parametrize("init", ["layer", "truncated_normal", "uniform", "permutation"])
def test_same_seed_same_values_different_seed_different(trained_cnn, init):
    model = trained_cnn
    block = Block("fc1", ("fc1",))
    start = snapshot(model)
    randomize_block(model, block, seed=11, init=init)
    first = snapshot(model)
    restore(model, start)
    randomize_block(model, block, seed=11, init=init)
    second = snapshot(model)
    restore(model, start)
    randomize_block(model, block, seed=12, init=init)
    third = snapshot(model)
    kernel = _indices(model, [model.get_layer("fc1").kernel]).pop()
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(first[kernel], third[kernel])


def test_randomization_does_not_depend_on_the_global_random_state(trained_cnn):
    model = trained_cnn
    block = Block("conv2", ("conv2",))
    start = snapshot(model)
    keras.utils.set_random_seed(100)
    randomize_block(model, block, seed=5)
    first = snapshot(model)
    restore(model, start)
    keras.utils.set_random_seed(200)
    np.random.default_rng().random(10)
    randomize_block(model, block, seed=5)
    for a, b in zip(first, snapshot(model), strict=True):
        assert np.array_equal(a, b)


def test_variables_of_a_block_get_independent_seeds(trained_cnn):
    """Two variables of the same shape in one block must not receive identical values."""
    model = trained_cnn
    randomize_block(model, Block("two", ("fc1", "logits")), seed=9, init="truncated_normal")
    # fc1/bias (1024,) and logits/kernel[:, 0] (1024,) share a size: compare the flattened prefixes.
    fc1_bias = model.get_layer("fc1").bias.numpy()
    logits_kernel = model.get_layer("logits").kernel.numpy().ravel()[:1024]
    assert not np.array_equal(fc1_bias, logits_kernel)


def test_derive_seed_is_deterministic_31_bit_and_order_sensitive():
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    assert derive_seed(0, 1, 2) != derive_seed(0, 2, 1)
    assert derive_seed(0, 1, 2) != derive_seed(1, 1, 2)
    for parts in [(0,), (0, 0), (2**40, 3), (123, 4, 5, 6)]:
        value = derive_seed(*parts)
        assert isinstance(value, int) and 0 <= value < 2**31


# ---------------------------------------------------------------------------------------------
# initializers


def test_layer_init_uses_the_layers_own_initializers(trained_cnn):
    """The paper re-initialises a block with the initializers it was trained from: in the released CNN,
    truncated_normal(stddev=0.1) kernels and constant 0.1 biases (not zero)."""
    model = trained_cnn
    for name in ("logits", "fc1", "conv2", "conv1"):
        layer = model.get_layer(name)
        assert np.any(layer.bias.numpy() != 0.1)  # fake-trained
        randomize_block(model, Block(name, (name,)), seed=21, init="layer")
        np.testing.assert_array_equal(layer.bias.numpy(), np.full(layer.bias.shape, 0.1, np.float32))
        kernel = layer.kernel.numpy()
        assert np.abs(kernel).max() <= 0.2 * (1 + 1e-6), name
        assert abs(kernel.mean()) < 0.02, name
        assert kernel.std() == pytest.approx(TRUNCATED_NORMAL_STD_FACTOR * 0.1, rel=0.15), name
        if kernel.size > 10_000:
            assert np.abs(kernel).max() > 0.19  # fills the truncated range


@pytest.mark.parametrize("init", ["layer", "truncated_normal", "uniform"])
def test_each_variable_gets_its_initializers_draw_for_its_own_seed(trained_cnn, init):
    """Variable i of a block is exactly what its initializer draws for the integer seed derive_seed(seed, i)."""
    model = trained_cnn
    block = Block("top", ("logits", "fc1"))
    for seed in (5, 6):
        randomize_block(model, block, seed=seed, init=init, init_std=0.05)
        for index, (layer, variable) in enumerate(block_variables(model, block)):
            initializer = randomize._initializer(layer, variable, init, 0.05, derive_seed(seed, index))
            expected = keras.ops.convert_to_numpy(initializer(variable.shape, dtype=variable.dtype))
            np.testing.assert_array_equal(variable.numpy(), expected, err_msg=f"{variable.path} seed {seed}")


def test_mlp_layer_init_uses_its_fan_in_scaled_initializer():
    keras.utils.set_random_seed(0)
    model = models.mnist_mlp()
    _fake_train(model)
    randomize_block(model, Block("fc2", ("fc2",)), seed=3, init="layer")
    kernel, bias = model.get_layer("fc2").kernel.numpy(), model.get_layer("fc2").bias.numpy()
    assert not bias.any()
    assert kernel.std() == pytest.approx(TRUNCATED_NORMAL_STD_FACTOR * 2 / math.sqrt(2500), rel=0.02)


def test_uniform_init_has_the_requested_standard_deviation(trained_cnn):
    std = 0.05
    randomize_block(trained_cnn, Block("fc1", ("fc1",)), seed=4, init="uniform", init_std=std)
    kernel = trained_cnn.get_layer("fc1").kernel.numpy()
    limit = math.sqrt(3) * std
    assert np.abs(kernel).max() <= limit * (1 + 1e-6) and np.abs(kernel).max() > 0.99 * limit
    assert kernel.std() == pytest.approx(std, rel=0.01)


def test_permutation_init_shuffles_each_variables_own_values(trained_cnn):
    layer = trained_cnn.get_layer("conv2")
    before = [v.numpy().copy() for v in layer.trainable_variables]
    randomize_block(trained_cnn, Block("conv2", ("conv2",)), seed=4, init="permutation")
    after = [v.numpy() for v in layer.trainable_variables]
    for old, new in zip(before, after):
        assert new.shape == old.shape
        np.testing.assert_array_equal(np.sort(new, axis=None), np.sort(old, axis=None))  # same values
        assert np.mean(new != old) > 0.9  # in another place
    again = [v.numpy().copy() for v in layer.trainable_variables]
    restore_values = before
    for variable, value in zip(layer.trainable_variables, restore_values):
        variable.assign(value)
    randomize_block(trained_cnn, Block("conv2", ("conv2",)), seed=4, init="permutation")
    for variable, value in zip(layer.trainable_variables, again):
        np.testing.assert_array_equal(variable.numpy(), value)  # seeded


def test_layer_init_honours_a_custom_initializer():
    keras.utils.set_random_seed(2)
    inputs = keras.Input(shape=(4,))
    outputs = keras.layers.Dense(3, kernel_initializer=keras.initializers.Constant(0.25),
                                 bias_initializer=keras.initializers.Ones(), name="d")(inputs)
    model = keras.Model(inputs, outputs)
    _fake_train(model)
    randomize_block(model, Block("d", ("d",)), seed=1)
    assert np.all(model.get_layer("d").kernel.numpy() == 0.25)
    assert np.all(model.get_layer("d").bias.numpy() == 1.0)


def test_truncated_normal_init(trained_cnn):
    model = trained_cnn
    std = 0.01
    randomize_block(model, Block("fc1", ("fc1",)), seed=4, init="truncated_normal", init_std=std)
    for variable in model.get_layer("fc1").trainable_variables:
        values = variable.numpy()
        assert np.abs(values).max() <= 2 * std * (1 + 1e-5), variable.path
    kernel = model.get_layer("fc1").kernel.numpy()  # 3136 x 1024: ~3.2M samples
    assert abs(kernel.mean()) < 1e-4
    assert kernel.std() == pytest.approx(TRUNCATED_NORMAL_STD_FACTOR * std, rel=0.02)
    assert np.abs(kernel).max() > 1.9 * std


def test_truncated_normal_init_std_scales(trained_cnn):
    model = trained_cnn
    randomize_block(model, Block("fc1", ("fc1",)), seed=4, init="truncated_normal", init_std=0.5)
    kernel = model.get_layer("fc1").kernel.numpy()
    assert np.abs(kernel).max() <= 1.0 + 1e-5
    assert kernel.std() == pytest.approx(TRUNCATED_NORMAL_STD_FACTOR * 0.5, rel=0.02)


def test_a_model_loaded_from_the_cache_randomizes_like_the_original(tmp_path):
    """Cached models are loaded with keras.models.load_model: their deserialised initializers must give
    the same seeded values, so a cache hit and a fresh training produce the same randomized models."""
    keras.utils.set_random_seed(0)
    original = models.mnist_cnn()
    _fake_train(original)
    path = tmp_path / "model.keras"
    original.save(path)
    loaded = keras.models.load_model(path, compile=False)
    for index, block in enumerate(models.layer_blocks(original)):
        randomize_block(original, block, seed=derive_seed(1, index))
        randomize_block(loaded, block, seed=derive_seed(1, index))
    for a, b in zip(original.variables, loaded.variables, strict=True):
        assert a.path == b.path
        assert np.array_equal(a.numpy(), b.numpy()), a.path


# ---------------------------------------------------------------------------------------------
# batch normalization


def _bn_values(model):
    bn = model.get_layer("bn")
    return {name: getattr(bn, name).numpy().copy() for name in ("gamma", "beta", "moving_mean", "moving_variance")}


def test_batch_norm_trainable_reinitialised_statistics_untouched():
    model = bn_model()
    before = _bn_values(model)
    snap = snapshot(model)
    count = randomize_block(model, Block("bn", ("bn",)), seed=3)
    after = _bn_values(model)
    assert count == 2
    assert np.all(after["gamma"] == 1.0) and np.all(after["beta"] == 0.0)
    assert np.array_equal(after["moving_mean"], before["moving_mean"])
    assert np.array_equal(after["moving_variance"], before["moving_variance"])
    bn = model.get_layer("bn")
    assert _changed(snap, snapshot(model)) == _indices(model, [bn.gamma, bn.beta])


def test_batch_norm_statistics_reset_when_asked():
    model = bn_model()
    snap = snapshot(model)
    count = randomize_block(model, Block("bn", ("bn",)), seed=3, reset_bn_statistics=True)
    after = _bn_values(model)
    assert count == 4
    assert np.all(after["gamma"] == 1.0) and np.all(after["beta"] == 0.0)
    assert np.all(after["moving_mean"] == 0.0)
    assert np.all(after["moving_variance"] == 1.0)
    bn = model.get_layer("bn")
    assert _changed(snap, snapshot(model)) == _indices(model, bn.weights)
    restore(model, snap)
    for variable, value in zip(model.variables, snap, strict=True):
        assert np.array_equal(variable.numpy(), value)


def test_batch_norm_statistics_with_truncated_normal_init():
    """init='truncated_normal' replaces every reset variable, statistics included when asked."""
    model = bn_model()
    randomize_block(model, Block("bn", ("bn",)), seed=3, init="truncated_normal", init_std=0.01,
                    reset_bn_statistics=True)
    for name, values in _bn_values(model).items():
        assert np.abs(values).max() <= 0.02 + 1e-6, name


def test_reset_bn_statistics_is_harmless_without_batch_norm(trained_cnn):
    model = trained_cnn
    before = snapshot(model)
    assert randomize_block(model, Block("fc1", ("fc1",)), seed=1, reset_bn_statistics=True) == 2
    assert _changed(before, snapshot(model)) == _indices(model, model.get_layer("fc1").trainable_variables)


# ---------------------------------------------------------------------------------------------
# in place: same variable objects, no retracing


def test_randomization_is_in_place_and_does_not_retrace(trained_cnn):
    from sanity_cli.methods.engine import Recipe, engine_for

    model = trained_cnn
    variables_before = list(model.variables)
    engine = engine_for(model)
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
    targets = np.array([0, 1, 2, 3])
    g_before = engine.gradients(x, targets)
    for index, block in enumerate(models.layer_blocks(model)):
        randomize_block(model, block, seed=derive_seed(5, index))
    g_after = engine.gradients(x, targets)
    assert all(a is b for a, b in zip(variables_before, model.variables, strict=True))
    assert len(model.variables) == len(variables_before)
    fn = engine._maps_function((Recipe(),), 1, 1)
    assert fn.experimental_get_tracing_count() == 1
    # the traced function reads the variables at call time: the gradients follow the new weights
    assert g_before.shape == g_after.shape == x.shape
    assert not np.allclose(g_before, g_after)
    expected = _reference_gradients(model, x, targets)
    np.testing.assert_allclose(g_after, expected, rtol=1e-4, atol=1e-6)


def _reference_gradients(model, x, targets):
    import tensorflow as tf

    xs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        logits = model(xs, training=False)
        score = tf.gather(logits, tf.constant(targets, tf.int32), axis=1, batch_dims=1)
    return tape.gradient(score, xs).numpy()


# ---------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("init", ["glorot", "", "Layer", "normal"])
def test_bad_init_name(trained_cnn, init):
    before = snapshot(trained_cnn)
    with pytest.raises(SanityError, match="init"):
        randomize_block(trained_cnn, Block("fc1", ("fc1",)), seed=0, init=init)
    assert not _changed(before, snapshot(trained_cnn))


@pytest.mark.parametrize("std", [0.0, -0.01, float("nan")])
def test_bad_init_std(trained_cnn, std):
    before = snapshot(trained_cnn)
    with pytest.raises(SanityError, match="init_std"):
        randomize_block(trained_cnn, Block("fc1", ("fc1",)), seed=0, init="truncated_normal", init_std=std)
    assert not _changed(before, snapshot(trained_cnn))


def test_block_naming_a_missing_layer(trained_cnn):
    before = snapshot(trained_cnn)
    with pytest.raises(SanityError, match="fc9"):
        randomize_block(trained_cnn, Block("fc9", ("fc9",)), seed=0)
    with pytest.raises(SanityError, match="nope"):
        block_variables(trained_cnn, Block("mixed", ("fc1", "nope")))
    # a block with a valid and a missing layer fails before changing anything
    with pytest.raises(SanityError):
        randomize_block(trained_cnn, Block("mixed", ("fc1", "nope")), seed=0)
    assert not _changed(before, snapshot(trained_cnn))


def test_module_constants():
    assert randomize.INITS == ("layer", "truncated_normal", "uniform", "permutation")
