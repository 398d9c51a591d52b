"""Inception v3 with random weights (model.weights=none): the paper's 17 blocks, in-place randomization,
GradCAM layer, photos and the offline-weights error. No download happens."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from sanity_cli import inception, methods, photos, randomize
from sanity_cli.errors import SanityError
from sanity_cli.inception import blocks as randomization_blocks

from conftest import run_dirs

PAPER = ["logits", "mixed_7c", "mixed_7b", "mixed_7a", "mixed_6e", "mixed_6d", "mixed_6c", "mixed_6b", "mixed_6a",
         "mixed_5d", "mixed_5c", "mixed_5b", "conv2d_4a_3x3", "conv2d_3b_1x1", "conv2d_2b_3x3", "conv2d_2a_3x3",
         "conv2d_1a_3x3"]


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(0)
    return inception.build("none")


def test_seventeen_paper_blocks_cover_every_variable_layer_once(model):
    blocks = randomization_blocks(model)
    assert [b.name for b in blocks] == PAPER
    owned = [name for b in blocks for name in b.layers]
    assert len(owned) == len(set(owned)), "a layer belongs to two blocks"
    with_variables = {layer.name for layer in model.layers if layer.weights}
    assert set(owned) == with_variables
    by_name = {b.name: b for b in blocks}
    assert by_name["logits"].layers == ("predictions",)
    assert by_name["conv2d_1a_3x3"].layers == ("conv2d", "batch_normalization")
    assert by_name["conv2d_4a_3x3"].layers == ("conv2d_4", "batch_normalization_4")
    # mixed_5b (Keras mixed0) holds its four branches: 7 convs, each with a batch norm
    assert len(by_name["mixed_5b"].layers) == 14
    # mixed_7c (Keras mixed10) includes the layers of its inner concatenations
    assert len(by_name["mixed_7c"].layers) == 18


def test_each_block_randomizes_in_place_and_only_its_own_variables(model):
    blocks = randomization_blocks(model)
    rng = np.random.default_rng(1)
    for variable in model.trainable_variables:  # stand-in for trained weights: biases and betas are not zero
        variable.assign(variable.numpy() + rng.normal(0, 0.01, variable.shape).astype(np.float32))
    trained = randomize.snapshot(model)
    identities = [id(v) for v in model.variables]
    paths = [v.path for v in model.variables]
    for index, block in enumerate(blocks):
        randomize.randomize_block(model, block, seed=index)
        own = {v.path for _, v in randomize.block_variables(model, block)}
        for path, before, variable in zip(paths, trained, model.variables):
            changed = not np.array_equal(before, variable.numpy())
            if path in own:
                assert changed, f"{path} of block {block.name} did not change"
            elif path not in own:
                assert not changed, f"{path} changed but is not in block {block.name}"
        randomize.restore(model, trained)
    assert [id(v) for v in model.variables] == identities
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(trained, model.variables))


def test_gradcam_default_layer_is_mixed_7c_and_upsamples_to_299(model):
    engine = methods.engine.engine_for(model)
    assert "mixed10" in engine.conv_layer_names()
    image = np.random.default_rng(0).uniform(-1, 1, (1, 299, 299, 3)).astype(np.float32)
    cam = methods.explain(model, image, np.array([3]), "gradcam", {"layer": "mixed10"})
    assert cam.shape == (1, 299, 299, 3)
    assert (cam >= 0).all()
    with pytest.raises(SanityError, match="mixed10"):
        methods.explain(model, image, np.array([3]), "gradcam", {"layer": "predictions"})


def test_offline_without_cached_weights_fails_fast_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(inception, "_reachable", lambda timeout=2.0: False)
    start = time.monotonic()
    with pytest.raises(SanityError) as err:
        inception.build("imagenet")
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "\n" not in message
    assert inception.WEIGHTS_FILE in message and str(tmp_path / "keras" / "models") in message
    assert "model.weights=" in message


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(SanityError, match="does not exist"):
        inception.build(str(tmp_path / "nope.h5"))


def test_photos_embedded_default_and_folder(tmp_path):
    default = photos.load_photos(None, size=299, max_images=3, log=lambda _: None)
    assert default.x_test.shape == (3, 299, 299, 3)
    assert 0 <= default.x_test.min() and default.x_test.max() <= 1
    assert default.provenance["files"][0] == "skimage.data.chelsea"
    from skimage import io

    folder = tmp_path / "photos"
    folder.mkdir()
    io.imsave(folder / "wide.png", (np.random.default_rng(0).uniform(0, 255, (40, 80, 3))).astype(np.uint8))
    io.imsave(folder / "gray.png", np.full((50, 30), 128, np.uint8))
    (folder / "notes.txt").write_text("not an image")
    loaded = photos.load_photos(str(folder), size=32, log=lambda _: None)
    assert loaded.x_test.shape == (2, 32, 32, 3)  # grayscale becomes RGB; non-image suffixes are ignored
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    lines = []
    assert photos.load_photos(str(folder), size=32, log=lines.append).x_test.shape == (2, 32, 32, 3)
    assert any("skipping broken.jpg" in line for line in lines)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SanityError, match="no images"):
        photos.load_photos(str(empty), size=32, log=lambda _: None)


def test_sanity_run_inception_cascading_end_to_end(sanity, tmp_path):
    result = sanity("run", "model=inception", "model.weights=none", "test=cascading", "n_images=1",
                    "method=[gradient,guided_backprop,sobel]", "metric=[spearman_abs]",
                    "verdict.metric=spearman_abs")
    assert result.returncode == 0, result.stderr[-3000:]
    run = run_dirs(tmp_path)[0]
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics.drop_duplicates("stage")["block"].tolist() == ["trained"] + PAPER
    assert (metrics["model"] == "inception").all()
    for name in ("grid_absolute_1.png", "grid_diverging_1.png", "similarity.png", "verdict.csv", "manifest.json"):
        assert (run / name).exists()


def test_inception_refuses_the_data_test(sanity):
    result = sanity("run", "model=inception", "model.weights=none", "test=data", "n_images=1",
                    "method=[gradient]", "metric=[spearman_abs]", "verdict.metric=spearman_abs")
    assert result.returncode == 2 and "mnist_cnn" in result.stderr and "Traceback" not in result.stderr
