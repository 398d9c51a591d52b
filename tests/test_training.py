"""Tests for sanity_cli.models and sanity_cli.training: architectures, the content-keyed model cache
(hits, keys, corruption recovery, atomic writes), label permutation and permuted-label training, and a
smoke test that the CNN really learns real MNIST.

Real MNIST only: the 4000/1000 bundled subset, sliced to a few hundred images wherever learning is not
asserted. Every model cache lives in tmp_path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from sanity_cli import architectures, models, training
from sanity_cli.data import Dataset, fingerprint, load_dataset
from sanity_cli.errors import SanityError
from sanity_cli.training import (TrainSettings, cache_key, load_or_train, normalize_labels_mode, train,
                                 training_arrays)



def settings(**overrides) -> TrainSettings:
    base = dict(epochs=1, batch_size=64, learning_rate=1e-3, max_train_images=None,
                permuted_target_accuracy=0.9, permuted_max_epochs=3)
    base.update(overrides)
    return TrainSettings(**base)


def subset(ds: Dataset, n_train: int, n_test: int) -> Dataset:
    return Dataset(name=ds.name, x_train=ds.x_train[:n_train].copy(), y_train=ds.y_train[:n_train].copy(),
                   x_test=ds.x_test[:n_test].copy(), y_test=ds.y_test[:n_test].copy(),
                   class_names=list(ds.class_names), provenance=dict(ds.provenance, n_train=n_train, n_test=n_test))


@pytest.fixture(scope="module")
def bundled() -> Dataset:
    return load_dataset("mnist", "bundled", log=lambda line: None)


@pytest.fixture(scope="module")
def small(bundled) -> Dataset:
    """256 train / 128 test real MNIST images: enough to exercise training and the cache quickly."""
    return subset(bundled, 256, 128)


class Log(list):
    def __call__(self, line):
        self.append(str(line))

    def matching(self, text: str) -> list[str]:
        return [line for line in self if text in line]


def weights_equal(a: keras.Model, b: keras.Model) -> bool:
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir())


# ---------------------------------------------------------------------------------------------
# architectures


def test_cnn_architecture():
    keras.utils.set_random_seed(0)
    model = models.mnist_cnn()
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 10)
    kernels = {layer.name: tuple(layer.kernel.shape) for layer in model.layers if hasattr(layer, "kernel")}
    assert kernels == {"conv1": (5, 5, 1, 32), "conv2": (5, 5, 32, 64), "fc1": (7 * 7 * 64, 1024),
                       "logits": (1024, 10)}
    for name in ("conv1", "conv2", "fc1"):
        assert model.get_layer(name).activation is keras.activations.relu, name
        assert model.get_layer(name).use_bias
    for name in ("pool1", "pool2"):
        assert isinstance(model.get_layer(name), keras.layers.MaxPooling2D)
        assert tuple(model.get_layer(name).pool_size) == (2, 2)
    assert model.get_layer("logits").activation is keras.activations.linear
    assert model.count_params() == (5 * 5 * 32 + 32) + (5 * 5 * 32 * 64 + 64) + (3136 * 1024 + 1024) + (1024 * 10 + 10)
    assert architectures.get("mnist_cnn").build().name == "mnist_cnn"


def test_mlp_architecture():
    keras.utils.set_random_seed(0)
    model = models.mnist_mlp()
    assert model.input_shape == (None, 28, 28, 1)
    dense = [(layer.name, tuple(layer.kernel.shape)) for layer in model.layers if hasattr(layer, "kernel")]
    assert dense == [("fc1", (784, 2500)), ("fc2", (2500, 1500)), ("fc3", (1500, 500)), ("logits", (500, 10))]
    for name in ("fc1", "fc2", "fc3"):
        assert model.get_layer(name).activation is keras.activations.relu, name
    assert model.get_layer("logits").activation is keras.activations.linear
    assert architectures.get("mnist_mlp").build().name == "mnist_mlp"


@pytest.mark.parametrize("arch", ["mnist_cnn", "mnist_mlp"])
def test_models_output_logits_not_probabilities(arch, small):
    keras.utils.set_random_seed(0)
    model = architectures.get(arch).build()
    out = model.predict(small.x_test[:32], verbose=0)
    assert out.shape == (32, 10)
    assert np.all(np.isfinite(out))
    assert (out < 0).any(), "logits should take negative values"
    assert not np.allclose(out.sum(axis=1), 1.0, atol=1e-3), "outputs look like a softmax"


def test_randomization_blocks_order_logits_first():
    cnn, mlp = models.mnist_cnn(), models.mnist_mlp()
    cnn_blocks = models.layer_blocks(cnn)
    assert [b.name for b in cnn_blocks] == ["logits", "fc1", "conv2", "conv1"]
    assert [b.layers for b in cnn_blocks] == [("logits",), ("fc1",), ("conv2",), ("conv1",)]
    assert [b.name for b in models.layer_blocks(mlp)] == ["logits", "fc3", "fc2", "fc1"]
    for model, blocks in ((cnn, cnn_blocks), (mlp, models.layer_blocks(mlp))):
        covered = {name for block in blocks for name in block.layers}
        assert covered == {layer.name for layer in model.layers if layer.weights}


def _truncated_normal_std(stddev: float) -> float:
    """Standard deviation of N(0, stddev^2) truncated at +-2 stddev (tf.truncated_normal)."""
    from scipy import stats
    return float(stats.truncnorm(-2, 2).std() * stddev)


def test_cnn_initializers_are_the_released_codes():
    """src/train_cnn_models.py: weight_variable = truncated_normal(stddev=0.1), bias_variable = constant(0.1)."""
    keras.utils.set_random_seed(0)
    model = models.mnist_cnn()
    for name in ("conv1", "conv2", "fc1", "logits"):
        kernel, bias = (np.asarray(w) for w in model.get_layer(name).get_weights())
        assert np.abs(kernel).max() <= 0.2 + 1e-6, name  # truncated at two standard deviations
        assert kernel.std() == pytest.approx(_truncated_normal_std(0.1), rel=0.1 if kernel.size < 1000 else 0.02)
        np.testing.assert_array_equal(bias, np.full_like(bias, 0.1))


def test_mlp_initializers_are_the_released_codes():
    """src/train_mlp_models.py: truncated_normal(stddev=2/sqrt(n_inputs)), zero biases."""
    keras.utils.set_random_seed(0)
    model = models.mnist_mlp()
    for name, fan_in in (("fc1", 784), ("fc2", 2500), ("fc3", 1500), ("logits", 500)):
        kernel, bias = (np.asarray(w) for w in model.get_layer(name).get_weights())
        stddev = 2 / np.sqrt(fan_in)
        assert np.abs(kernel).max() <= 2 * stddev + 1e-6, name
        assert kernel.std() == pytest.approx(_truncated_normal_std(stddev), rel=0.02), name
        assert not bias.any(), name


def test_build_unknown_architecture():
    with pytest.raises(SanityError, match="unknown model 'resnet'"):
        architectures.get("resnet").build()


# ---------------------------------------------------------------------------------------------
# settings and label modes


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("epochs", -1),
    ("batch_size", 0), ("batch_size", -8),
    ("learning_rate", 0.0), ("learning_rate", -1e-3), ("learning_rate", float("nan")),
    ("max_train_images", 0), ("max_train_images", -5),
    ("permuted_target_accuracy", 0.0), ("permuted_target_accuracy", 1.5), ("permuted_target_accuracy", -0.1),
    ("permuted_target_accuracy", float("nan")),
    ("permuted_max_epochs", 0), ("permuted_max_epochs", -2),
])
def test_validate_rejects_bad_settings(field, value):
    with pytest.raises(SanityError):
        settings(**{field: value}).validate()


def test_validate_accepts_good_settings():
    settings().validate()
    settings(max_train_images=None, permuted_target_accuracy=1.0).validate()
    settings(max_train_images=1, epochs=1, batch_size=1, permuted_max_epochs=1).validate()


def test_load_or_train_validates_before_touching_the_cache(small, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("train called"))
    with pytest.raises(SanityError, match="epochs"):
        load_or_train("mnist_cnn", small, "true", 0, settings(epochs=0), cache_dir=tmp_path / "cache",
                      log=Log())
    assert not (tmp_path / "cache").exists()


def test_unwritable_cache_dir_is_a_sanity_error(small, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SanityError, match="cache"):
        load_or_train("mnist_cnn", small, "true", 0, settings(), cache_dir=blocker / "cache", log=Log())


def test_a_read_only_cache_that_holds_the_model_is_used(small, golden, tmp_path, monkeypatch):
    """Loading needs no write (entries appear whole, by an atomic rename): a read-only cache is used as it is,
    and only a miss there is an error."""
    import os

    golden_cache, first = golden
    cache = copy_cache(golden_cache, tmp_path / "cache")
    before = cache_files(cache)
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: not (mode & os.W_OK and Path(path) == cache))
    hit = load_or_train("mnist_cnn", small, "true", 0, settings(), cache_dir=cache, log=Log())
    assert hit.info["cache"] == "hit" and weights_equal(hit.model, first.model)
    assert cache_files(cache) == before  # not even a lock file
    with pytest.raises(SanityError, match="not writable and holds no true-label mnist_cnn"):
        load_or_train("mnist_cnn", small, "true", 1, settings(), cache_dir=cache, log=Log())


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SANITY_CACHE_DIR", str(tmp_path / "models"))
    assert training.default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("SANITY_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert training.default_cache_dir() == tmp_path / "xdg" / "sanity" / "models"


@pytest.mark.parametrize("value", [True, "true", "True", "TRUE"])
def test_normalize_labels_mode_true(value):
    assert normalize_labels_mode(value) == "true"


@pytest.mark.parametrize("value", ["permuted", "Permuted"])
def test_normalize_labels_mode_permuted(value):
    assert normalize_labels_mode(value) == "permuted"


@pytest.mark.parametrize("value", ["foo", "", False, None, "false", "random", 1])
def test_normalize_labels_mode_rejects(value):
    with pytest.raises(SanityError, match="labels"):
        normalize_labels_mode(value)


def test_load_or_train_rejects_unknown_labels(small, tmp_path, monkeypatch):
    def fake_train(*args, **kwargs):
        raise AssertionError("train() must not start for labels='foo'")

    monkeypatch.setattr(training, "train", fake_train)
    with pytest.raises(SanityError, match="labels"):
        load_or_train("mnist_cnn", small, "foo", 0, settings(), cache_dir=tmp_path / "cache", log=Log())


@pytest.mark.parametrize("labels", [True, "True"], ids=["bool_True", "str_True"])
def test_load_or_train_normalizes_hydra_true(small, tmp_path, monkeypatch, labels):
    """`labels=true` reaches the code as a boolean from Hydra: it must mean the true labels, cached as such."""
    seen = {}

    def fake_train(arch, dataset, labels_mode, *args, **kwargs):
        seen["labels"] = labels_mode
        raise RuntimeError("stop")

    monkeypatch.setattr(training, "train", fake_train)
    with pytest.raises(RuntimeError, match="stop"):
        load_or_train("mnist_cnn", small, labels, 0, settings(), cache_dir=tmp_path / "cache", log=Log())
    assert seen["labels"] == "true"
    assert cache_key("mnist_cnn", small, labels, 0, settings()) == cache_key("mnist_cnn", small, "true", 0,
                                                                             settings())


# ---------------------------------------------------------------------------------------------
# cache key


def test_cache_key_stable_for_equal_inputs(small):
    a = cache_key("mnist_cnn", small, "true", 0, settings())
    assert a == cache_key("mnist_cnn", small, "true", 0, settings())
    # an equal copy of the data (new arrays, same content) and an equal settings object give the same key
    assert a == cache_key("mnist_cnn", subset(small, 256, 128), "true", 0, settings(learning_rate=0.001))
    assert a.startswith("mnist_cnn-mnist-true-")
    assert set(a) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-")  # a safe file name


@pytest.mark.parametrize("labels", ["true", "permuted"])
@pytest.mark.parametrize("change", [
    dict(batch_size=32), dict(learning_rate=2e-3), dict(max_train_images=100), dict(max_train_images=255),
])
def test_cache_key_changes_with_shared_settings(small, labels, change):
    base = cache_key("mnist_cnn", small, labels, 0, settings())
    assert cache_key("mnist_cnn", small, labels, 0, settings(**change)) != base


@pytest.mark.parametrize("labels", ["true", "permuted"])
def test_cache_key_changes_with_the_l2_penalty_and_the_held_out_split(small, labels):
    base = cache_key("mnist_cnn", small, labels, 0, settings(validation_images=10))
    assert cache_key("mnist_cnn", small, labels, 0, settings(validation_images=10, l2=0.001)) != base
    assert cache_key("mnist_cnn", small, labels, 0, settings(validation_images=10, validation_from="end")) != base
    # with nothing held out, where it would come from does not matter
    assert cache_key("mnist_cnn", small, labels, 0, settings(validation_from="end")) == \
        cache_key("mnist_cnn", small, labels, 0, settings())


def test_l2_penalty_is_the_released_reg_on_exactly_its_kernels():
    """train_cnn_models.py --reg: loss + 0.001 * (l2_loss(W_conv1) + l2_loss(W_conv2) + l2_loss(W_fc1)),
    tf.nn.l2_loss(W) = sum(W^2) / 2; no biases, no logits kernel."""
    arch = architectures.get("mnist_cnn")
    keras.utils.set_random_seed(0)
    model = arch.build()
    assert training.penalise(model, arch, 0.0) == 0 and not model.losses
    assert training.penalise(model, arch, 0.001) == 3
    by_hand = 0.001 * sum(0.5 * np.sum(model.get_layer(name).kernel.numpy().astype(np.float64) ** 2)
                          for name in ("conv1", "conv2", "fc1"))
    assert by_hand > 10  # the released penalty at initialisation: 0.001 x 3.2M weights x ~0.008 / 2
    np.testing.assert_allclose(float(sum(model.losses)), by_hand, rtol=1e-5)
    for name in ("logits",):  # the logits kernel and every bias leave it unchanged
        model.get_layer(name).kernel.assign(np.full(model.get_layer(name).kernel.shape, 9.0, np.float32))
    for name in ("conv1", "conv2", "fc1", "logits"):
        model.get_layer(name).bias.assign(np.full(model.get_layer(name).bias.shape, 9.0, np.float32))
    np.testing.assert_allclose(float(sum(model.losses)), by_hand, rtol=1e-5)
    assert architectures.get("mnist_mlp").penalised == ("fc1", "fc2", "fc3")


def test_training_applies_the_penalty_and_saves_a_model_without_it(small, tmp_path):
    """A strong penalty shrinks the penalised kernels and leaves the logits kernel free; the cached model
    carries no regularizer (the penalty is a training setting, not part of the architecture)."""
    chosen = dict(max_train_images=128, batch_size=32, epochs=2, learning_rate=0.01)
    plain, _, _ = train("mnist_cnn", small, "true", 0, settings(**chosen), log=Log())
    log = Log()
    shrunk, _, _ = train("mnist_cnn", small, "true", 0, settings(**chosen, l2=5.0), log=log)
    assert log.matching("L2 penalty 5 x sum(w^2)/2 on conv1, conv2, fc1")

    def norm(model, name):
        return float(np.linalg.norm(model.get_layer(name).kernel.numpy()))

    for name in ("conv1", "conv2", "fc1"):
        assert norm(shrunk, name) < 0.9 * norm(plain, name)
    assert norm(shrunk, "logits") > 0.9 * norm(plain, "logits")
    shrunk.save(tmp_path / "m.keras")
    assert not keras.models.load_model(tmp_path / "m.keras", compile=False).losses


def test_cache_key_changes_with_epochs_for_true_labels(small):
    assert cache_key("mnist_cnn", small, "true", 0, settings(epochs=2)) != \
        cache_key("mnist_cnn", small, "true", 0, settings(epochs=1))


@pytest.mark.parametrize("change", [dict(permuted_target_accuracy=0.95), dict(permuted_max_epochs=50)])
def test_cache_key_changes_with_permuted_settings_for_permuted_labels(small, change):
    assert cache_key("mnist_cnn", small, "permuted", 0, settings(**change)) != \
        cache_key("mnist_cnn", small, "permuted", 0, settings())


def test_cache_key_ignores_settings_that_do_not_affect_the_weights(small):
    """True-label training ignores the permuted-training settings; permuted-label training runs
    permuted_max_epochs (not epochs), so those do not enter the respective keys."""
    true_key = cache_key("mnist_cnn", small, "true", 0, settings())
    assert cache_key("mnist_cnn", small, "true", 0,
                     settings(permuted_target_accuracy=0.5, permuted_max_epochs=99)) == true_key
    permuted_key = cache_key("mnist_cnn", small, "permuted", 0, settings())
    assert cache_key("mnist_cnn", small, "permuted", 0, settings(epochs=7)) == permuted_key


def test_cache_key_changes_with_seed_labels_arch_and_data(small):
    base = cache_key("mnist_cnn", small, "true", 0, settings())
    assert cache_key("mnist_cnn", small, "true", 1, settings()) != base
    assert cache_key("mnist_cnn", small, "permuted", 0, settings()) != base
    assert cache_key("mnist_mlp", small, "true", 0, settings()) != base

    changed_pixel = subset(small, 256, 128)
    changed_pixel.x_train[3, 10, 10, 0] += np.float32(1 / 255)
    assert fingerprint(changed_pixel) != fingerprint(small)
    assert cache_key("mnist_cnn", changed_pixel, "true", 0, settings()) != base

    changed_label = subset(small, 256, 128)
    changed_label.y_train[0] = (changed_label.y_train[0] + 1) % 10
    assert cache_key("mnist_cnn", changed_label, "true", 0, settings()) != base

    changed_test = subset(small, 256, 128)
    changed_test.y_test[0] = (changed_test.y_test[0] + 1) % 10
    assert cache_key("mnist_cnn", changed_test, "true", 0, settings()) != base

    assert cache_key("mnist_cnn", subset(small, 255, 128), "true", 0, settings()) != base


def test_cache_key_changes_with_architecture_version(small, monkeypatch):
    base = cache_key("mnist_cnn", small, "true", 0, settings())
    monkeypatch.setattr(models, "ARCHITECTURE_VERSION", models.ARCHITECTURE_VERSION + 1)
    assert cache_key("mnist_cnn", small, "true", 0, settings()) != base


# ---------------------------------------------------------------------------------------------
# cache behaviour (real training on a small subset)


@pytest.fixture(scope="module")
def golden(small, tmp_path_factory):
    """One CNN trained on `small` with settings() and seed 0, cached once per module; tests copy the cache."""
    cache = tmp_path_factory.mktemp("golden_cache")
    log = Log()
    result = load_or_train("mnist_cnn", small, "true", 0, settings(), cache_dir=cache, log=log)
    assert result.info["cache"] == "trained"
    assert log.matching("cache: saved")
    return cache, result


def copy_cache(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for file in source.iterdir():
        shutil.copy2(file, target / file.name)
    return target


def _assert_valid_cache(cache: Path, key: str) -> dict:
    model_path, meta_path = cache / f"{key}.keras", cache / f"{key}.json"
    meta = json.loads(meta_path.read_text())
    assert meta["key"] == key
    assert meta["sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    loaded = keras.models.load_model(model_path, compile=False)
    assert loaded.output_shape == (None, 10)
    return meta


def test_cache_hit_returns_identical_model_without_training(small, golden, tmp_path, monkeypatch):
    golden_cache, first = golden
    assert first.key == cache_key("mnist_cnn", small, "true", 0, settings())
    assert first.labels == "true"
    cache = copy_cache(golden_cache, tmp_path / "cache")

    def no_training(*args, **kwargs):
        raise AssertionError("train() called on a cache hit")

    monkeypatch.setattr(training, "train", no_training)
    log = Log()
    second = load_or_train("mnist_cnn", small, "true", 0, settings(), cache_dir=cache, log=log)
    assert second.info["cache"] == "hit"
    assert second.key == first.key and second.labels == "true"
    assert log.matching("cache: loaded")
    assert not log.matching("corrupt")
    assert weights_equal(first.model, second.model)
    np.testing.assert_array_equal(first.model.predict(small.x_test[:16], verbose=0),
                                  second.model.predict(small.x_test[:16], verbose=0))
    for name in ("epochs_run", "train_images", "train_accuracy", "test_accuracy", "labels"):
        assert second.info[name] == first.info[name], name
    # a second hit in the same process works too (the lock is reentrant across calls)
    assert load_or_train("mnist_cnn", small, "true", 0, settings(), cache_dir=cache, log=Log()).info["cache"] == "hit"

    # the patch is effective: a different setting is a miss and calls train()
    with pytest.raises(AssertionError, match="train\\(\\) called"):
        load_or_train("mnist_cnn", small, "true", 1, settings(), cache_dir=cache, log=Log())


def test_atomic_writes_leave_no_temporary_files(small, tmp_path):
    cache = tmp_path / "cache"
    result = load_or_train("mnist_cnn", small, "true", 0, settings(max_train_images=128), cache_dir=cache,
                           log=Log())
    key = result.key
    assert cache_files(cache) == sorted([f"{key}.json", f"{key}.keras", f"{key}.lock"])
    meta = _assert_valid_cache(cache, key)
    assert meta["arch"] == "mnist_cnn"
    assert meta["info"]["train_images"] == 128
    assert meta["data_provenance"]["source"] == "bundled"
    assert "cache" not in meta["info"]


def test_failed_save_leaves_no_partial_cache(small, tmp_path, monkeypatch):
    """A model.save that dies half-way (disk full) is one clear error and leaves neither a temp file nor a
    cache entry behind."""

    class BrokenModel:
        def save(self, path):
            Path(path).write_bytes(b"partial")
            raise OSError("disk full")

    monkeypatch.setattr(training, "train", lambda *a, **k: (BrokenModel(), {"labels": "true"}, []))
    cache = tmp_path / "cache"
    with pytest.raises(SanityError, match="disk full"):
        load_or_train("mnist_cnn", small, "true", 0, settings(), cache_dir=cache, log=Log())
    assert [name for name in cache_files(cache) if not name.endswith(".lock")] == []


def test_temporary_files_of_a_killed_writer_are_removed(small, tmp_path):
    """A process killed (SIGKILL) while saving leaves a hidden temporary file; the next caller of that cache
    entry removes it under the entry's lock, so the cache never shows a partial file for long."""
    cache = tmp_path / "cache"
    cache.mkdir()
    key = cache_key("mnist_cnn", small, "true", 0, settings(max_train_images=128))
    (cache / f".{key}.x1y2z3.tmp.keras").write_bytes(b"half a model")
    other = cache / ".someone-else.abc.tmp.keras"
    other.write_bytes(b"another entry being written right now")
    load_or_train("mnist_cnn", small, "true", 0, settings(max_train_images=128), cache_dir=cache, log=Log())
    assert sorted(p.name for p in cache.glob(".*")) == [other.name]


def test_concurrent_callers_train_once(small, tmp_path, monkeypatch):
    """Two callers racing for the same key: the lock makes one train and the other load its result."""
    import threading
    import time

    calls = []

    def slow_fake_train(arch, dataset, labels, seed, settings_, log=print, checkpoint=None):
        calls.append(threading.current_thread().name)
        time.sleep(0.5)  # the other caller arrives while this one holds the lock
        keras.utils.set_random_seed(seed)
        inputs = keras.Input(shape=(28, 28, 1))
        outputs = keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(inputs))
        return keras.Model(inputs, outputs), {"labels": labels, "epochs_run": 1}, []

    monkeypatch.setattr(training, "train", slow_fake_train)
    cache = tmp_path / "cache"
    results, errors = {}, []

    def worker(name):
        try:
            results[name] = load_or_train("mnist_cnn", small, "true", 0, settings(), cache_dir=cache, log=Log())
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(f"caller{i}",), name=f"caller{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(calls) == 1
    assert sorted(r.info["cache"] for r in results.values()) == ["hit", "trained"]
    a, b = results.values()
    assert weights_equal(a.model, b.model)
    _assert_valid_cache(cache, a.key)


@pytest.mark.parametrize("damage", ["truncate_keras", "garbage_json", "missing_json", "missing_keras"])
def test_damaged_cache_entry_is_reported_once_and_retrained(small, golden, tmp_path, damage, monkeypatch):
    golden_cache, first = golden
    cache = copy_cache(golden_cache, tmp_path / "cache")
    model_path, meta_path = cache / f"{first.key}.keras", cache / f"{first.key}.json"
    if damage == "truncate_keras":
        size = model_path.stat().st_size
        with open(model_path, "r+b") as handle:
            handle.truncate(size // 2)
    elif damage == "garbage_json":
        meta_path.write_bytes(b"\x00\xffnot json{{{")
    elif damage == "missing_json":
        meta_path.unlink()
    else:
        model_path.unlink()

    calls = []
    real_train = training.train
    monkeypatch.setattr(training, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    log = Log()
    second = load_or_train("mnist_cnn", small, "true", 0, settings(), cache_dir=cache, log=log)
    corrupt = log.matching("corrupt")
    assert len(corrupt) == 1, log
    assert "\n" not in corrupt[0]
    assert model_path.name in corrupt[0]
    assert calls == [1]
    assert second.info["cache"] == "trained"
    out = second.model.predict(small.x_test[:8], verbose=0)
    assert out.shape == (8, 10) and np.all(np.isfinite(out))
    # same seed and settings: the retrained model is the one originally cached
    assert weights_equal(first.model, second.model)

    # the cache entry was replaced by a valid one, with no leftovers
    _assert_valid_cache(cache, first.key)
    assert cache_files(cache) == sorted([f"{first.key}.json", f"{first.key}.keras", f"{first.key}.lock"])
    third_log = Log()
    third = load_or_train("mnist_cnn", small, "true", 0, settings(), cache_dir=cache, log=third_log)
    assert third.info["cache"] == "hit"
    assert not third_log.matching("corrupt")
    assert calls == [1]
    assert weights_equal(second.model, third.model)


# ---------------------------------------------------------------------------------------------
# label permutation and permuted-label training


def test_training_arrays_true_labels_unchanged(bundled):
    x, y = training_arrays(bundled, "true", 0, settings())
    assert x is bundled.x_train or np.array_equal(x, bundled.x_train)
    np.testing.assert_array_equal(y, bundled.y_train)
    x, y = training_arrays(bundled, "true", 0, settings(max_train_images=100))
    np.testing.assert_array_equal(x, bundled.x_train[:100])
    np.testing.assert_array_equal(y, bundled.y_train[:100])


def test_training_arrays_permuted_labels(bundled):
    original = bundled.y_train.copy()
    x, y = training_arrays(bundled, "permuted", 0, settings())
    np.testing.assert_array_equal(bundled.y_train, original)  # input untouched
    np.testing.assert_array_equal(x, bundled.x_train)  # images stay in place: only the labels move
    assert y.shape == original.shape
    np.testing.assert_array_equal(np.bincount(y, minlength=10), np.bincount(original, minlength=10))
    assert np.mean(y != original) > 0.8  # a random relabelling keeps ~10% by chance
    np.testing.assert_array_equal(y, training_arrays(bundled, "permuted", 0, settings())[1])
    other = training_arrays(bundled, "permuted", 1, settings())[1]
    assert np.mean(other != y) > 0.8


def test_training_arrays_permutes_within_the_training_subset(bundled):
    x, y = training_arrays(bundled, "permuted", 3, settings(max_train_images=500))
    assert len(x) == len(y) == 500
    np.testing.assert_array_equal(x, bundled.x_train[:500])
    np.testing.assert_array_equal(np.sort(y), np.sort(bundled.y_train[:500]))
    assert np.mean(y != bundled.y_train[:500]) > 0.75


def test_permuted_training_stops_at_target_accuracy(bundled):
    data = subset(bundled, 256, 200)
    log = Log()
    model, info, history = train("mnist_mlp", data, "permuted", 0,
                        settings(max_train_images=64, batch_size=32, permuted_target_accuracy=0.9,
                                 permuted_max_epochs=200), log=log)
    assert info["labels"] == "permuted"
    assert info["train_images"] == 64
    assert 1 <= info["epochs_run"] < 200
    assert info["train_accuracy"] >= 0.9
    assert 0.0 <= info["test_accuracy"] <= 1.0
    assert info["test_accuracy"] < 0.4  # random labels: nothing generalises (chance is 0.1)
    assert not log.matching("warning")
    assert log.matching("train accuracy") and log.matching("test accuracy")
    # the reported train accuracy is measured on the permuted labels the model was trained on
    x, y = training_arrays(data, "permuted", 0, settings(max_train_images=64))
    predicted = model.predict(x, verbose=0).argmax(axis=1)
    assert np.mean(predicted == y) == pytest.approx(info["train_accuracy"], abs=1e-6)
    # it stopped at the first epoch whose weights reached the target, and says so
    measured = [row["train_accuracy"] for row in history]
    assert measured[-1] >= 0.9 and all(value < 0.9 for value in measured[:-1])
    assert info["memorised"] is True and info["target_accuracy"] == 0.9


def test_permuted_training_warns_when_target_not_reached(small):
    log = Log()
    _, info, _ = train("mnist_mlp", small, "permuted", 0,
                    settings(max_train_images=64, batch_size=32, permuted_target_accuracy=1.0,
                             permuted_max_epochs=1), log=log)
    assert info["epochs_run"] == 1
    assert info["train_accuracy"] < 1.0
    warnings = log.matching("warning")
    assert len(warnings) == 1 and "max_epochs" in warnings[0]


# ---------------------------------------------------------------------------------------------
# the CNN learns real MNIST


@pytest.mark.slow
def test_cnn_learns_mnist_in_two_epochs(bundled, tmp_path):
    """The smoke budget's training (2 epochs of the bundled 4000 images) gives a real digit classifier."""
    assert len(bundled.x_train) == 4000 and len(bundled.x_test) == 1000
    result = load_or_train("mnist_cnn", bundled, "true", 0,
                           settings(epochs=2, batch_size=128, learning_rate=1e-3), cache_dir=tmp_path,
                           log=Log())
    info = result.info
    assert info["epochs_run"] == 2
    assert info["train_images"] == 4000
    assert info["test_accuracy"] > 0.85, info  # chance is 0.1
    assert info["train_accuracy"] > 0.85, info
    logits = result.model.predict(bundled.x_test, verbose=0)
    assert np.mean(logits.argmax(axis=1) == bundled.y_test) == pytest.approx(info["test_accuracy"], abs=1e-6)


# ---------------------------------------------------------------------------------------------
# the training loop: a new order every epoch, checkpoints, held-out validation images


def test_epoch_order_is_seeded_and_new_every_epoch():
    orders = [training.epoch_order(500, 0, epoch) for epoch in range(3)]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(500))
    assert all(not np.array_equal(orders[i], orders[j]) for i in range(3) for j in range(i))
    np.testing.assert_array_equal(orders[1], training.epoch_order(500, 0, 1))
    assert not np.array_equal(orders[1], training.epoch_order(500, 1, 1))


def test_every_epoch_fits_the_training_set_in_a_new_order(small, monkeypatch):
    """What the model is fitted on: each epoch a permutation of the whole training set, never the same twice.
    (Keras' fit(shuffle=True) after set_random_seed repeats one order; a network then learns the sequence.)"""
    seen = []
    real_fit = keras.Model.fit

    def recording_fit(self, x=None, y=None, **kwargs):
        seen.append((np.asarray(x).reshape(len(x), -1).sum(axis=1), np.asarray(y).copy(), kwargs.get("shuffle")))
        return real_fit(self, x, y, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    train("mnist_mlp", small, "true", 0, settings(epochs=3, batch_size=64, max_train_images=128), log=Log())
    assert len(seen) == 3
    x, y = training_arrays(small, "true", 0, settings(max_train_images=128))
    sums = x.reshape(len(x), -1).sum(axis=1)
    for image_sums, labels, shuffle in seen:
        assert shuffle is False  # our order, not Keras' repeated one
        np.testing.assert_allclose(np.sort(image_sums), np.sort(sums), rtol=1e-6)
    assert not np.array_equal(seen[0][0], seen[1][0]) and not np.array_equal(seen[1][0], seen[2][0])


def test_validation_images_are_held_out_of_training(bundled):
    data = subset(bundled, 300, 50)
    x, y = training_arrays(data, "true", 0, settings(validation_images=100, validation_from="end"))
    np.testing.assert_array_equal(x, data.x_train[:200])
    x_val, y_val = training.validation_arrays(data, settings(validation_images=100, validation_from="end"))
    np.testing.assert_array_equal(x_val, data.x_train[200:])
    np.testing.assert_array_equal(y_val, data.y_train[200:])
    # the released code's split (the default): x_valid, x_train = x_train[:5000], x_train[5000:]
    x, y = training_arrays(data, "true", 0, settings(validation_images=100))
    np.testing.assert_array_equal(x, data.x_train[100:])
    np.testing.assert_array_equal(y, data.y_train[100:])
    x_val, y_val = training.validation_arrays(data, settings(validation_images=100))
    np.testing.assert_array_equal(x_val, data.x_train[:100])
    with pytest.raises(SanityError, match="validation_from"):
        settings(validation_from="middle").validate()
    assert training.validation_arrays(data, settings()) is None
    with pytest.raises(SanityError, match="validation_images"):
        training_arrays(data, "true", 0, settings(validation_images=300))
    with pytest.raises(SanityError, match="validation_images"):
        settings(validation_images=-1).validate()
    _, info, _ = train("mnist_mlp", data, "true", 0, settings(validation_images=100, batch_size=64), log=Log())
    assert info["train_images"] == 200 and 0.0 <= info["validation_accuracy"] <= 1.0


class Killed(Exception):
    pass


KILLABLE = settings(max_train_images=96, batch_size=32, permuted_target_accuracy=1.0, permuted_max_epochs=4)


def train_killed_at(epoch: int, data, checkpoint, chosen: TrainSettings = KILLABLE) -> None:
    """Train KILLABLE with a checkpoint and kill it as epoch `epoch` starts (as SIGKILL would, mid-run)."""
    def killing_log(line):
        if f"epoch {epoch}/" in line:
            raise Killed

    with pytest.raises(Killed):
        train("mnist_mlp", data, "permuted", 0, chosen, log=killing_log, checkpoint=checkpoint)


@pytest.mark.parametrize("l2", [0.0, 0.01])
def test_killed_training_resumes_from_its_checkpoint_with_the_same_result(small, tmp_path, l2):
    """A checkpoint (weights and Adam state) after every epoch: a training killed in epoch 3 continues from
    epoch 3 and ends with the weights of an uninterrupted training (with the L2 penalty put back on)."""
    chosen = dataclasses.replace(KILLABLE, l2=l2)
    whole, _, whole_history = train("mnist_mlp", small, "permuted", 0, chosen, log=Log())
    checkpoint = training.Checkpoint(tmp_path, "key")
    train_killed_at(3, small, checkpoint, chosen)
    assert checkpoint.model_path.exists()
    assert len(json.loads(checkpoint.meta_path.read_text())["history"]) == 2
    log = Log()
    resumed, info, history = train("mnist_mlp", small, "permuted", 0, chosen, log=log, checkpoint=checkpoint)
    assert log.matching("resuming from the checkpoint after epoch 2")
    assert not log.matching("epoch 1/") and not log.matching("epoch 2/") and log.matching("epoch 3/")
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert [row["train_accuracy"] for row in history] == [row["train_accuracy"] for row in whole_history]
    assert weights_equal(whole, resumed)
    assert info["memorised"] is False


def test_a_checkpoint_whose_history_and_weights_disagree_is_discarded(small, tmp_path):
    """Killed between writing the weights (epoch 3) and the history (still epoch 2): not resumed from."""
    checkpoint = training.Checkpoint(tmp_path, "key")
    train_killed_at(4, small, checkpoint)
    meta = json.loads(checkpoint.meta_path.read_text())
    checkpoint.meta_path.write_text(json.dumps({"history": meta["history"][:2]}))
    log = Log()
    assert checkpoint.load(steps_per_epoch=3, log=log) is None
    assert log.matching("unusable (9 optimizer steps for 2 epochs)")
    assert not checkpoint.model_path.exists() and not checkpoint.meta_path.exists()


def test_a_cache_hit_removes_a_checkpoint_left_by_a_killed_training(small, tmp_path):
    chosen = settings(max_train_images=64, batch_size=32)
    first = load_or_train("mnist_mlp", small, "true", 0, chosen, cache_dir=tmp_path, log=Log())
    leftover = training.Checkpoint(tmp_path, first.key)
    leftover.save(first.model, [{"epoch": 1}])
    assert load_or_train("mnist_mlp", small, "true", 0, chosen, cache_dir=tmp_path, log=Log()).info["cache"] == "hit"
    assert not leftover.model_path.exists() and not leftover.meta_path.exists()


def test_load_or_train_removes_the_checkpoint_once_the_model_is_cached(small, tmp_path):
    result = load_or_train("mnist_mlp", small, "permuted", 0,
                           settings(max_train_images=64, batch_size=32, permuted_max_epochs=2,
                                    permuted_target_accuracy=1.0), cache_dir=tmp_path, log=Log())
    assert cache_files(tmp_path) == sorted([f"{result.key}.json", f"{result.key}.keras", f"{result.key}.lock"])
    meta = json.loads((tmp_path / f"{result.key}.json").read_text())
    assert [row["epoch"] for row in meta["history"]] == [1, 2]


def test_models_csv_columns_keep_one_order_cached_or_fresh():
    """issue 30 (6): models.csv's columns do not change order between a freshly trained and a cached model."""
    from types import SimpleNamespace

    from sanity_cli.core import MODEL_COLUMNS, models_frame

    spec = SimpleNamespace(model_name="mnist_cnn")
    fresh = SimpleNamespace(labels="true", key="k", info={"train_seconds": 3.0, "epochs_run": 2, "cache": "trained",
                                                          "test_accuracy": 0.9, "zeta": 1})
    cached = SimpleNamespace(labels="true", key="k", info={"cache": "hit", "test_accuracy": 0.9, "epochs_run": 2,
                                                           "train_seconds": 3.0, "zeta": 1})
    first, second = models_frame(spec, [fresh]), models_frame(spec, [cached])
    assert list(first.columns) == list(second.columns)
    assert list(first.columns) == ["model", "labels", "cache_key", "cache", "epochs_run", "test_accuracy",
                                   "train_seconds", "zeta"]
    assert all(c in MODEL_COLUMNS for c in first.columns[:-1])
