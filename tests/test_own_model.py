"""Your own model, data and method (issue 12): a Keras file (model=keras), arrays (data=npz), a method imported
by name (kind: custom) and the Python API (check), each through the same pipeline as the built-in ones."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_cli import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]


def synthetic(n: int, seed: int):
    """32x32x3 images of 3 classes: class c is a bright square of colour c at its own place, on faint noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.random((n, 32, 32, 3)).astype(np.float32) * 0.3
    for i, c in enumerate(y):
        x[i, 4 + 9 * c:12 + 9 * c, 4 + 9 * c:12 + 9 * c, c] += 0.7
    return np.clip(x, 0, 1), y


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A small CNN trained on synthetic data and saved as .keras (ending in a softmax, as many files do), its data
    as .npz (uint8), a nested variant, and a non-image model."""
    import keras

    folder = tmp_path_factory.mktemp("own")
    x_train, y_train = synthetic(300, 0)
    x_test, y_test = synthetic(40, 1)
    np.savez(folder / "data.npz", x_train=(x_train * 255).astype(np.uint8), y_train=y_train,
             x_test=(x_test * 255).astype(np.uint8), y_test=y_test)
    np.savez(folder / "test_only.npz", x_test=(x_test * 255).astype(np.uint8), y_test=y_test)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), name="image")
    h = keras.layers.Conv2D(8, 3, activation="relu", padding="same", name="c1")(inputs)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Conv2D(16, 3, activation="relu", padding="same", name="c2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(h), name="own_cnn")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=6, verbose=0)
    model.save(folder / "model.keras")
    base = keras.Model(inputs, model.get_layer("c2").output, name="features")  # shares the trained layers
    nested = keras.Sequential([keras.Input((32, 32, 3)), base, keras.layers.GlobalAveragePooling2D(name="gap2"),
                               keras.layers.Dense(3, name="out")], name="nested")
    nested.save(folder / "nested.keras")
    wrapper_in = keras.Input((32, 32, 3))  # the keras.applications pattern: x = base(inputs); pool; dense
    wrapped = keras.layers.GlobalAveragePooling2D()(base(wrapper_in))
    keras.Model(wrapper_in, keras.layers.Dense(3, name="out")(wrapped), name="wrapper").save(folder / "wrapper.keras")
    frozen = keras.models.clone_model(model)
    frozen.get_layer("c1").trainable = False
    frozen.save(folder / "frozen.keras")
    with_softmax = keras.Sequential([keras.Input((32, 32, 3)), *[keras.models.clone_model(model).get_layer(n)
                                                                  for n in ("c1", "pool", "c2", "gap")],
                                     keras.layers.Dense(3, name="dense"), keras.layers.Softmax(name="probs")])
    with_softmax.save(folder / "softmax_layer.keras")
    flat = keras.Sequential([keras.Input((12,)), keras.layers.Dense(3)], name="tabular")
    flat.save(folder / "tabular.keras")
    (folder / "not_a_model.keras").write_text("this is not a model\n")
    return folder


def own_args(own: Path, *extra: str, model: str = "model.keras", data: str = "data.npz") -> tuple[str, ...]:
    return ("model=keras", f"model.path={own / model}", "data=npz", f"data.path={own / data}", *extra)


def test_cascading_on_your_keras_file_and_arrays(sanity, own, tmp_path):
    result = sanity("run", *own_args(own, "test=cascading", "method=[gradient,guided_backprop,gradcam,sobel]",
                                     "metric=[spearman_abs]", "n_images=16", "hydra.run.dir=run"))
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    table = pd.read_csv(run / "metrics.csv")
    assert table.drop_duplicates("stage")["block"].tolist() == ["trained", "head", "c2", "c1"]  # its own layers
    log = (run / "cli.log").read_text()
    assert "softmax activation of the final layer 'head' is replaced by the identity" in log
    models = pd.read_csv(run / "models.csv")
    assert models["cache"].tolist() == ["file"] and models["model"].tolist() == ["keras"]
    verdict = pd.read_csv(run / "verdict.csv").set_index("method")
    assert set(verdict.index) == {"gradient", "guided_backprop", "gradcam", "sobel"}
    assert verdict.loc["gradient", "verdict"] == "PASS"          # trained maps lost at full randomization
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["data_provenance"]["source"] == "npz" and len(manifest["data_provenance"]["sha256"]) == 64
    assert (run / "report.html").exists() and (run / "grid_absolute_1.png").exists()


def test_data_test_trains_two_fresh_copies_of_your_architecture(sanity, own, tmp_path):
    args = own_args(own, "test=data", "method=[gradient,sobel]", "metric=[spearman_abs]", "n_images=8",
                    "model.train.epochs=2", "model.train.learning_rate=0.01", "model.train.max_epochs=2",
                    "model.train.batch_size=128",
                    "model.train.optimizer=rmsprop", "hydra.run.dir=run")
    result = sanity("run", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    models = pd.read_csv(tmp_path / "run" / "models.csv", dtype={"labels": str}).set_index("labels")
    assert list(models.index) == ["true", "permuted"]
    assert (models["cache"] == "trained").all() and models["cache_key"].str.startswith("keras-npz-").all()
    assert models.loc["true", "epochs_run"] == 2 and models.loc["permuted", "epochs_run"] == 2
    assert models.loc["true", "test_accuracy"] > 0.6     # the fresh copy learns the squares in 2 epochs
    again = sanity("run", *args[:-1], "hydra.run.dir=again")  # the cache serves both copies now
    assert again.returncode == 0
    assert (pd.read_csv(tmp_path / "again" / "models.csv")["cache"] == "hit").all()
    trained = sanity("train", *[a for a in args[:-1] if not a.startswith(("test=", "method=", "metric="))],
                     "labels=permuted", "hydra.run.dir=train")  # `sanity train` makes the same copy
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert f"cache key {models.loc['permuted', 'cache_key']}, hit" in trained.stdout
    result = sanity("run", *own_args(own, "test=data", "n_images=4", data="test_only.npz"), "hydra.run.dir=x")
    assert_one_line_error(result, "x_train")


def test_blocks_group_layers_and_every_layer_with_variables_is_in_one(sanity, own, tmp_path):
    result = sanity("run", *own_args(own, "method=[gradient]", "metric=[spearman_abs]", "n_images=4",
                                     "+model.blocks={top: [head], features: ['c.*']}", "hydra.run.dir=run"))
    assert result.returncode == 0, result.stderr[-3000:]
    blocks = pd.read_csv(tmp_path / "run" / "metrics.csv").drop_duplicates("stage")["block"].tolist()
    assert blocks == ["trained", "top", "features"]
    stray = sanity("run", *own_args(own, "n_images=4", "+model.blocks={top: [head]}", "hydra.run.dir=stray"))
    assert_one_line_error(stray, "model.blocks leaves out layer(s) with variables: c1, c2")
    assert not (tmp_path / "stray").exists()


def test_a_nested_model_is_opened_for_blocks_and_guided_relus(sanity, own, tmp_path):
    result = sanity("run", *own_args(own, "method=[gradient,guided_backprop,gradcam]", "metric=[spearman_abs]",
                                     "n_images=8", "hydra.run.dir=run", model="nested.keras"))
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert table.drop_duplicates("stage")["block"].tolist() == ["trained", "out", "c2", "c1"]
    assert "guided ReLU swap engaged" in (tmp_path / "run" / "cli.log").read_text()
    assert set(table["method"]) == {"gradient", "guided_backprop", "gradcam"}  # Grad-CAM on 'features'


def test_your_method_goes_through_the_run_and_its_faults_are_one_line(sanity, own, tmp_path):
    (tmp_path / "own_methods_12.py").write_text(
        "import numpy as np\n"
        "def saliency(model, images, targets, power=1.0):\n"
        "    import tensorflow as tf\n"
        "    x = tf.constant(images)\n"
        "    with tf.GradientTape() as tape:\n"
        "        tape.watch(x)\n"
        "        score = tf.gather(model(x), targets, axis=1, batch_dims=1)\n"
        "    return np.abs(tape.gradient(score, x).numpy()) ** power\n"
        "def brightness(model, images, targets):\n"
        "    return images.mean(-1)\n"
        "def wrong_shape(model, images, targets):\n"
        "    return np.zeros((len(images), 3))\n"
        "def with_nan(model, images, targets):\n"
        "    maps = np.zeros(images.shape); maps[1, 2, 3, 0] = np.nan; return maps\n"
        "def fails(model, images, targets):\n"
        "    raise RuntimeError('out of ideas')\n")
    result = sanity("run", *own_args(own, "method=[gradient,custom]", "method.custom.function=own_methods_12:saliency",
                                     "+method.custom.params.power=1", "+method.model_free={kind: custom, function: "
                                     "own_methods_12.brightness}", "metric=[spearman_abs]", "n_images=8",
                                     "hydra.run.dir=run"))
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "run" / "metrics.csv")
    values = table.pivot_table(index=["stage", "image"], columns="method", values="value")
    np.testing.assert_allclose(values["custom"], values["gradient"], atol=1e-6)  # |gradient| = the paper's map
    verdict = pd.read_csv(tmp_path / "run" / "verdict.csv").set_index("method")
    assert verdict.loc["model_free", "verdict"] == "FAIL" and verdict.loc["model_free", "similarity"] == 1.0
    for function, fragment in (("own_methods_12:wrong_shape", "returned maps of shape (4, 3)"),
                               ("own_methods_12:with_nan", "returned NaN or Inf in 1 of 4 maps"),
                               ("no_such_module_12:saliency", "cannot import no_such_module_12"),
                               ("own_methods_12:fails", "raised RuntimeError: out of ideas")):
        bad = sanity("run", *own_args(own, "method=[custom]", f"method.custom.function={function}", "n_images=4",
                                      f"hydra.run.dir=bad_{function.split(':')[1]}"))
        assert_one_line_error(bad, "method 'custom'", fragment)
        assert not (tmp_path / f"bad_{function.split(':')[1]}").exists()


@pytest.mark.parametrize("case, fragment", [
    ("not_a_model", "is not a Keras model Keras can load"),
    ("wrong_shape", "has images of shape (28, 28, 1) but the model expects (32, 32, 3)"),
    ("tabular", "not an image (batch, height, width, channels)"),
    ("no_arrays", "has no y_test"),
])
def test_bad_own_inputs_are_one_line(sanity, own, tmp_path, case, fragment):
    if case == "wrong_shape":
        np.savez(tmp_path / "mnist_like.npz", x_test=np.zeros((4, 28, 28), np.uint8), y_test=np.zeros(4, int))
        args = own_args(own, data=str(tmp_path / "mnist_like.npz"))
    elif case == "no_arrays":
        np.savez(tmp_path / "half.npz", x_test=np.zeros((4, 32, 32, 3), np.uint8))
        args = own_args(own, data=str(tmp_path / "half.npz"))
    else:
        args = own_args(own, model=f"{case}.keras")
    result = sanity("run", *args, "n_images=4", "hydra.run.dir=run")
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "run").exists()


def readme_api_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- api-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "README has no Python API example"
    return match.group(1)


def test_the_readme_python_api_example_runs_and_agrees_with_the_cli(sanity, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_api_example(), "README.md", "exec"), namespace)  # noqa: S102 (the README's own code)
    result = namespace["result"]
    assert (tmp_path / "grid.png").stat().st_size > 0 and (tmp_path / "my_check" / "verdict.csv").exists()
    assert result.maps["gradient"].shape == (32, len(result.stages), 32, 32) and result.stages[0] == "trained"
    # the same model, images and seed through the command line
    namespace["model"].save(tmp_path / "same.keras")
    np.savez(tmp_path / "same.npz", x_test=namespace["x"][:32], y_test=namespace["y"][:32])
    cli = sanity("run", "model=keras", f"model.path={tmp_path / 'same.keras'}", "data=npz",
                 f"data.path={tmp_path / 'same.npz'}", "test=cascading", "method=[gradient,guided_backprop,sobel]",
                 "metric=[spearman_abs,ssim]", "n_images=32", "seed=0", "hydra.run.dir=cli")
    assert cli.returncode == 0, cli.stderr[-3000:]
    theirs = pd.read_csv(tmp_path / "cli" / "verdict.csv")
    pd.testing.assert_frame_equal(result.verdict, theirs)


def test_a_folder_of_class_subfolders(sanity, own, tmp_path):
    """data=folder: one subfolder per class (labels from the sorted names), images sized to the model's input."""
    from PIL import Image

    arrays = np.load(own / "data.npz")
    for i, (image, label) in enumerate(zip(arrays["x_test"][:9], arrays["y_test"][:9])):
        (tmp_path / "photos" / f"kind_{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.kron(image, np.ones((2, 2, 1), np.uint8))).save(tmp_path / "photos" / f"kind_{label}" /
                                                                           f"{i}.png")  # 64x64: resized to 32
    result = sanity("run", "model=keras", f"model.path={own / 'model.keras'}", "data=folder",
                    f"data.path={tmp_path / 'photos'}", "target=label", "method=[gradient]", "metric=[spearman_abs]",
                    "n_images=9", "hydra.run.dir=run")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["data_provenance"]["classes"] == [f"kind_{k}" for k in sorted(set(arrays["y_test"][:9]))]
    labels = {int(f.split("/")[0][-1]) for f in manifest["data_provenance"]["files"]}
    assert sorted(labels) == sorted(set(int(t) for t in arrays["y_test"][:9]))
    assert all(caption.split(" ")[1].startswith("kind_") for caption in manifest["captions"])


def test_preprocess_conventions_and_a_black_baseline_per_channel(own):
    """model.preprocess maps images in [0, 1] as keras.applications does; 'black' is then per channel."""
    from sanity_cli import architectures, methods
    from sanity_cli import params as parameters
    from sanity_cli.methods.integrated_gradients import baseline_value

    def arch(**model):
        values = parameters.check("model", architectures.KERAS_PARAMS, {"path": str(own / "model.keras"), **model})
        return architectures.from_values("keras", values)

    pixel = np.array([[[[0.0, 0.5, 1.0]]]], np.float32)  # one RGB pixel
    np.testing.assert_allclose(arch(preprocess="inception").to_model_space(pixel), [[[[-1.0, 0.0, 1.0]]]])
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(arch(preprocess="torch").to_model_space(pixel),
                               ((pixel - mean) / std).astype(np.float32), rtol=1e-6)
    # caffe: RGB -> BGR, x 255, minus the BGR means
    np.testing.assert_allclose(arch(preprocess="caffe").to_model_space(pixel),
                               [[[[255.0 - 103.939, 127.5 - 116.779, 0.0 - 123.68]]]], rtol=1e-6)
    np.testing.assert_allclose(arch(input_range=[-0.5, 0.5]).to_model_space(pixel), [[[[-0.5, 0.0, 0.5]]]])
    torch = arch(preprocess="torch")
    params = methods.resolve_params("ig", methods.get("integrated_gradients"), {"baseline": "black"},
                                    torch.input_range)
    black = baseline_value(params["baseline"])  # one value per channel, broadcast over the image by the engine
    np.testing.assert_allclose(black, torch.to_model_space(np.zeros((1, 1, 1, 3)))[0, 0, 0], rtol=1e-6)
    with pytest.raises(Exception, match="model.input_range or model.preprocess, not both"):
        arch(preprocess="torch", input_range=[0, 1])


def test_an_h5_file_loads_too(sanity, own, tmp_path):
    import keras

    keras.models.load_model(own / "model.keras").save(tmp_path / "model.h5")
    result = sanity("run", "model=keras", f"model.path={tmp_path / 'model.h5'}", "data=npz",
                    f"data.path={own / 'data.npz'}", "method=[gradient]", "metric=[spearman_abs]", "n_images=4",
                    "hydra.run.dir=run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["block"].drop_duplicates().tolist()[:2] == ["trained",
                                                                                                     "head"]


def test_wrapped_bases_softmax_layers_and_frozen_layers(sanity, own, tmp_path):
    """Grad-CAM on a base called inside a functional wrapper; a final Softmax layer left out; a frozen layer is
    randomized all the same (its weights are not trainable, but they are what the block means)."""
    for model, blocks in (("wrapper.keras", ["trained", "out", "c2", "c1"]),
                          ("softmax_layer.keras", ["trained", "dense", "c2", "c1"]),
                          ("frozen.keras", ["trained", "head", "c2", "c1"])):
        run = f"run_{model.split('.')[0]}"
        result = sanity("run", *own_args(own, "method=[gradient,gradcam]", "metric=[spearman_abs]", "n_images=8",
                                         f"hydra.run.dir={run}", model=model))
        assert result.returncode == 0, (model, result.stderr[-3000:])
        table = pd.read_csv(tmp_path / run / "metrics.csv")
        assert table.drop_duplicates("stage")["block"].tolist() == blocks, model
        assert set(table["method"]) == {"gradient", "gradcam"}, model
        assert "self-check passed: all 3 randomization stages changed the model's logits" in (
            tmp_path / run / "cli.log").read_text()
    assert "final layer 'probs' (softmax) is left out" in (tmp_path / "run_softmax_layer" / "cli.log").read_text()


def test_a_flat_folder_without_labels_is_explained_for_the_top_class(sanity, own, tmp_path):
    from PIL import Image

    arrays = np.load(own / "data.npz")
    (tmp_path / "flat").mkdir()
    for i, image in enumerate(arrays["x_test"][:4]):
        Image.fromarray(image).save(tmp_path / "flat" / f"{i}.png")
    result = sanity("run", "model=keras", f"model.path={own / 'model.keras'}", "data=folder",
                    f"data.path={tmp_path / 'flat'}", "method=[gradient]", "metric=[spearman_abs]", "n_images=4",
                    "hydra.run.dir=run")
    assert result.returncode == 0, result.stderr[-3000:]
    captions = json.loads((tmp_path / "run" / "manifest.json").read_text())["captions"]
    assert len(captions) == 4 and all(c.split(" ")[1] in ("0", "1", "2") for c in captions)


def test_check_leaves_the_callers_logging_as_it_was(own, tmp_path, monkeypatch):
    import logging

    import keras

    from sanity_cli import check

    monkeypatch.chdir(tmp_path)
    handler = logging.FileHandler(tmp_path / "app.log")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    try:
        arrays = np.load(own / "data.npz")
        result = check(keras.models.load_model(own / "model.keras"), arrays["x_test"][:4], methods=["gradient"],
                       metrics=["spearman_abs"])
        assert handler in root.handlers and root.level == logging.WARNING
        logging.getLogger("app").warning("still logging")
        handler.flush()
        assert "still logging" in (tmp_path / "app.log").read_text()
        assert list(result.verdict["method"]) == ["gradient"]
    finally:
        root.removeHandler(handler)
        handler.close()
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])


def test_block_specs_that_overlap_or_do_not_parse_are_one_line(own):
    import keras

    from sanity_cli.errors import SanityError
    from sanity_cli.user_model import blocks

    model = keras.models.load_model(own / "model.keras")
    assert [b.name for b in blocks(model)] == ["head", "c2", "c1"]
    assert [(b.name, b.layers) for b in blocks(model, {"convs": ["c[12]"], "top": ["head"]})] == [
        ("top", ("head",)), ("convs", ("c1", "c2"))]  # output first, layers in model order
    with pytest.raises(SanityError, match=r"layer\(s\) c1 are in more than one block"):
        blocks(model, {"a": ["c1", "head"], "b": ["c.*"]})
    with pytest.raises(SanityError, match="is not a valid regex"):
        blocks(model, {"a": ["c(["], "b": ["head"]})
    with pytest.raises(SanityError, match="'dense_9' matches no layer with variables"):
        blocks(model, {"a": ["dense_9"]})


def test_probabilities_are_explained_when_asked_and_flat_folders_take_a_labels_csv(sanity, own, tmp_path):
    from PIL import Image

    arrays = np.load(own / "data.npz")
    (tmp_path / "flat").mkdir()
    rows = ["file,label"]
    for i, (image, label) in enumerate(zip(arrays["x_test"][:6], arrays["y_test"][:6])):
        Image.fromarray(image).save(tmp_path / "flat" / f"{i}.png")
        rows.append(f"{i}.png,{label}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    common = ("model=keras", f"model.path={own / 'model.keras'}", "data=folder", f"data.path={tmp_path / 'flat'}",
              f"data.labels_csv={tmp_path / 'labels.csv'}", "target=label", "method=[gradient]",
              "metric=[spearman_abs]", "n_images=6")
    logits = sanity("run", *common, "hydra.run.dir=logits")
    probabilities = sanity("run", *common, "model.output=probabilities", "hydra.run.dir=probabilities")
    assert logits.returncode == 0 and probabilities.returncode == 0, probabilities.stderr[-2000:]
    assert "pre-softmax" in (tmp_path / "logits" / "cli.log").read_text()
    assert "pre-softmax" not in (tmp_path / "probabilities" / "cli.log").read_text()
    manifest = json.loads((tmp_path / "logits" / "manifest.json").read_text())
    assert manifest["targets"] == [int(arrays["y_test"][int(Path(f).stem)]) for f in
                                   manifest["data_provenance"]["files"]][:6]
    first = pd.read_csv(tmp_path / "logits" / "metrics.csv")["value"].to_numpy()
    second = pd.read_csv(tmp_path / "probabilities" / "metrics.csv")["value"].to_numpy()
    assert not np.allclose(first, second)  # the softmax's gradient is another map
