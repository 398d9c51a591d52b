"""Paper Sec. 5, measured: its two models as built-in architectures (model=linear, model=conv_sumpool), their
saliency maps against hand computations, and every run's edge similarity (edges.csv, similarity.png, report.html).

Every expected value is computed here in numpy from the model's own weights: for f(x) = W^T x + b, Gradient =
SmoothGrad = w_t (the target's column), IG from baseline b = (x - b) ⊙ w_t, Gradient⊙Input = x ⊙ w_t; for
l_k(x) = sum_ij ReLU(w_k * x + b_k)_ij, the gradient is the 0/1 activation pattern a correlated with w_k,
grad_{i,j} = sum_{p,q} a_{i-p, j-q} w_k[p, q], constant over a flat region and different only within the filter's
reach of an edge, and Guided Backprop equals it."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
from dataclasses import replace  # noqa: E402
from html.parser import HTMLParser  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from skimage import filters  # noqa: E402

from sanity_cli import architectures, edges, metrics, report  # noqa: E402
from sanity_cli.checks import SelfChecks  # noqa: E402
from sanity_cli.errors import SanityError  # noqa: E402
from sanity_cli.methods import explain  # noqa: E402
from sanity_cli.params import check  # noqa: E402
from sanity_cli.stages import Comparison, Stage, compare_stage, departure  # noqa: E402
from sanity_cli.units import MemoryStore  # noqa: E402

from conftest import run_dirs  # noqa: E402
from test_cli import assert_one_line_error  # noqa: E402


def _close(got, want, atol=1e-5):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=1e-5, atol=atol)


def _data(shape, n=6, seed=0, train=True):
    """A stand-in data set of `shape` images in [0, 1] (what trained_model reads: shapes, labels, name)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, *shape)).astype(np.float32)
    y = rng.integers(0, 10, n)
    return SimpleNamespace(name="photos", x_test=x, y_test=y, x_train=x if train else x[:0], y_train=y if train
                           else y[:0])


def _sec5(name: str, shape, seed: int = 0, **values):
    """The registry's model=NAME with random weights for images of `shape` (input shape from the data)."""
    arch = architectures.from_values(name, check("model", architectures.declared(name), values))
    trained = arch.trained_model(_data(shape), "true", seed, None, cache=None, log=lambda line: None)
    return arch, trained


def _images(shape, n=4, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)


# ------------------------------------------------------------------------------------------ the linear model

@pytest.mark.parametrize("shape", [(28, 28, 1), (12, 10, 3)])
def test_linear_gradient_and_smoothgrad_are_the_targets_weights(shape):
    """f(x) = w . x: Gradient = w_t, and SmoothGrad (any noise) = E[w_t] = w_t; another class's column is not."""
    _, trained = _sec5("linear", shape)
    model = trained.model
    w = model.get_layer("logits").kernel.numpy()           # (D, classes)
    images = _images(shape)
    targets = np.array([0, 3, 7, 9], np.int32)
    want = w[:, targets].T.reshape(images.shape)
    _close(explain(model, images, targets, "gradient"), want)
    for sigma in (0.01, 1.0, 5.0):
        _close(explain(model, images, targets, "smoothgrad", {"samples": 5, "sigma": sigma}, seed=3), want)
    assert not np.allclose(explain(model, images, (targets + 1) % 10, "gradient"), want, atol=1e-3)


@pytest.mark.parametrize("baseline, black", [(0.0, 0.0), (0.3, 0.3), ("black", 0.0), ("zeros", 0.0)])
@pytest.mark.parametrize("rule", ["midpoint", "pair", "trapezoid", "left"])
def test_linear_integrated_gradients_are_input_minus_baseline_times_w(baseline, black, rule):
    """IG from baseline b of a linear model: (x - b) ⊙ w_t for every quadrature rule (its weights sum to 1);
    Gradient⊙Input: x ⊙ w_t."""
    shape = (9, 8, 3)
    _, trained = _sec5("linear", shape, seed=4)
    model = trained.model
    w = model.get_layer("logits").kernel.numpy()
    images = _images(shape, seed=2)
    targets = np.array([5, 1, 2, 8], np.int32)
    w_t = w[:, targets].T.reshape(images.shape)
    got = explain(model, images, targets, "integrated_gradients", {"steps": 4, "baseline": baseline, "rule": rule},
                  input_range=(0.0, 1.0))
    _close(got, (images - black) * w_t)
    _close(explain(model, images, targets, "gradient_x_input"), images * w_t)


# ------------------------------------------------------------------------------- the conv net with sum pooling

def hand_gradient(image: np.ndarray, kernel: np.ndarray, bias: np.ndarray, k: int) -> np.ndarray:
    """d/dx sum_ij ReLU(w_k * x + b_k)_ij (a 3x3 'valid' correlation) in numpy: the activation pattern
    a = 1[w_k * x + b_k > 0] of the (H-2, W-2) positions, then grad[i, j, c] = sum_{p,q} a[i-p, j-q] w_k[p, q, c]."""
    height, width, _ = image.shape
    pre = np.full((height - 2, width - 2), float(bias[k]))
    for p in range(3):
        for q in range(3):
            pre += image[p:p + height - 2, q:q + width - 2, :] @ kernel[p, q, :, k]
    active = (pre > 0).astype(np.float64)
    grad = np.zeros(image.shape)
    for p in range(3):
        for q in range(3):
            grad[p:p + height - 2, q:q + width - 2, :] += active[..., None] * kernel[p, q, :, k]
    return grad


def _conv_weights(model):
    conv = model.get_layer("conv")
    return conv.kernel.numpy().astype(np.float64), conv.bias.numpy().astype(np.float64)


def _with_biases(model, seed: int = 5):
    """Random (nonzero) biases, so that the activation pattern is not only the sign of w * x."""
    kernel, _ = _conv_weights(model)
    bias = np.random.default_rng(seed).normal(0, 0.5, kernel.shape[-1])
    model.get_layer("conv").set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return model


@pytest.mark.parametrize("shape", [(28, 28, 1), (20, 17, 3)])
def test_conv_sumpool_is_the_sum_of_relus_and_its_gradient_the_activation_pattern_correlated_with_w(shape):
    _, trained = _sec5("conv_sumpool", shape, filters=6)
    model = _with_biases(trained.model)
    kernel, bias = _conv_weights(model)
    images = _images(shape, n=3, seed=6) * 2.0 - 0.7
    logits = model(images).numpy()
    for n, image in enumerate(images):
        for k in range(6):
            pre = sum(image[p:p + shape[0] - 2, q:q + shape[1] - 2, :] @ kernel[p, q, :, k]
                      for p in range(3) for q in range(3)) + bias[k]
            _close(logits[n, k], np.maximum(pre, 0).sum(), atol=1e-3)
    for k in range(6):
        targets = np.full(len(images), k, np.int32)
        got = explain(model, images, targets, "gradient")
        for n, image in enumerate(images):
            _close(got[n], hand_gradient(image, kernel, bias, k))
        assert not np.allclose(got[0], hand_gradient(images[0], kernel, bias, (k + 1) % 6), atol=1e-3)


def _square_image(size: int = 32, outside: float = 0.7, inside: float = 0.2) -> np.ndarray:
    image = np.full((size, size, 1), outside)
    image[10:21, 8:23] = inside
    return image


def test_conv_sumpool_gradient_is_constant_on_flat_regions_and_changes_only_near_edges():
    """A pixel's gradient sees the 5x5 window around it (the 3x3 positions covering it, each a 3x3 patch): where
    that window is flat (value v) and inside the image, every covering position has the same activation
    a = 1[v sum(w_k) + b_k > 0], so the gradient is the region's constant a sum(w_k); it differs from that only
    within the filter's reach (2 pixels) of the square's edges or of the image border. The bias puts the threshold
    between the two values (the background 0.7 active, the square 0.2 not), so the pattern must switch at the
    square's edges."""
    _, trained = _sec5("conv_sumpool", (32, 32, 1), filters=4)
    model = trained.model
    kernel, _ = _conv_weights(model)
    k = int(np.argmax(kernel.sum(axis=(0, 1, 2))))          # a filter with sum(w_k) > 0
    total = kernel[..., k].sum()
    bias = np.zeros(4)
    bias[k] = -0.45 * total
    model.get_layer("conv").set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    image = _square_image()
    grad = explain(model, image[None].astype(np.float32), np.array([k], np.int32), "gradient")[0, ..., 0]
    flat = np.zeros(image.shape[:2], bool)
    for i in range(2, 30):
        for j in range(2, 30):
            flat[i, j] = np.ptp(image[i - 2:i + 3, j - 2:j + 3, 0]) == 0
    region_constant = np.where(image[..., 0] * total + bias[k] > 0, total, 0.0)   # a sum(w_k) of the pixel's region
    assert total > 0 and flat.sum() > 400 and set(np.unique(region_constant[flat])) == {0.0, total}
    _close(grad[flat], region_constant[flat], atol=1e-6)
    differs = np.abs(grad - region_constant) > 1e-5
    assert not (differs & flat).any()
    near_square = np.zeros_like(flat)
    near_square[8:23, 6:25] = True
    assert differs[near_square & ~flat].sum() > 10
    _close(grad, hand_gradient(image, kernel.astype(np.float64), bias, k)[..., 0])


@pytest.mark.parametrize("seed", [0, 1])
def test_guided_backprop_of_conv_sumpool_is_its_gradient(seed):
    """One ReLU, and above it only a sum: the upstream gradient is 1 > 0 everywhere, so Guided Backprop's rule
    (pass where the input and the upstream gradient are positive) keeps exactly the gradient's terms."""
    _, trained = _sec5("conv_sumpool", (18, 18, 3), seed=seed)
    model = _with_biases(trained.model, seed)
    images = _images((18, 18, 3), n=5, seed=seed) - 0.3
    targets = np.arange(5, dtype=np.int32)
    plain = explain(model, images, targets, "gradient")
    guided = explain(model, images, targets, "guided_backprop")
    assert np.abs(plain).max() > 0.1
    _close(guided, plain, atol=1e-6)


# ------------------------------------------------------------------------------------------ the architectures

def test_sec5_models_take_their_input_shape_from_the_data_and_seeded_random_weights():
    for name in ("linear", "conv_sumpool"):
        for shape in ((28, 28, 1), (40, 40, 3)):
            arch, trained = _sec5(name, shape)
            assert trained.model.input_shape[1:] == shape and trained.model.output_shape[-1] == 10
            assert trained.info == {"weights": "random", "cache": "random"}
            again = _sec5(name, shape)[1].model.get_weights()
            other = _sec5(name, shape, seed=1)[1].model.get_weights()
            assert all(np.array_equal(a, b) for a, b in zip(trained.model.get_weights(), again))
            assert not np.allclose(trained.model.get_weights()[0], other[0])
            arch.check_data("images", {"size": 40})  # any data
            arch.check_data("mnist")
    assert [b.name for b in _sec5("linear", (8, 8, 1))[0].blocks(_sec5("linear", (8, 8, 1))[1].model)] == ["logits"]
    conv_arch, conv = _sec5("conv_sumpool", (8, 8, 1), filters=3)
    assert [b.name for b in conv_arch.blocks(conv.model)] == ["conv"] and conv.model.output_shape[-1] == 3
    assert conv_arch.default_gradcam_layer(conv.model) == "conv"


def test_the_existing_entries_keep_their_identity_and_the_trained_sec5_models_are_keyed_by_their_shape():
    from sanity_cli.training import TrainSettings, cache_key

    for name in ("mnist_cnn", "mnist_mlp", "inception"):
        assert architectures.get(name).identity == {"arch": name}
    arch = architectures.from_values("conv_sumpool", check("model", architectures.declared("conv_sumpool"),
                                                           {"weights": "trained"}))
    assert arch.trained_by_sanity
    seen = {}

    def cache(shaped, dataset, labels, seed, settings, log):
        seen[shaped.shape] = shaped.identity
        return "cached"

    for shape in ((28, 28, 1), (32, 32, 3)):
        assert arch.trained_model(_data(shape), "true", 0, None, cache, log=print) == "cached"
    assert seen == {(28, 28, 1): {"arch": "conv_sumpool", "input_shape": [28, 28, 1], "filters": 10},
                    (32, 32, 3): {"arch": "conv_sumpool", "input_shape": [32, 32, 3], "filters": 10}}
    settings = TrainSettings(epochs=1, batch_size=8, learning_rate=1e-3, max_train_images=None,
                             permuted_target_accuracy=0.9, permuted_max_epochs=1)
    data = SimpleNamespace(**vars(_data((8, 8, 1))), class_names=[], provenance={})
    keys = {cache_key(replace(arch, shape=shape), data, "true", 0, settings) for shape in ((8, 8, 1), (8, 8, 3))}
    assert len(keys) == 2


def test_sec5_models_refuse_what_they_cannot_do_in_one_line():
    random_linear = architectures.from_values("linear", check("model", architectures.declared("linear"), {}))
    with pytest.raises(SanityError, match="model.weights=random is never trained"):
        random_linear.trained_model(_data((8, 8, 1)), "permuted", 0, None, None, print, copies=True)
    trained = architectures.from_values("linear", check("model", architectures.declared("linear"),
                                                        {"weights": "trained", "classes": 4}))
    with pytest.raises(SanityError, match="has none; use model.weights=random"):
        trained.trained_model(_data((8, 8, 3), train=False), "true", 0, None, None, print)
    with pytest.raises(SanityError, match="set model.classes=10"):
        trained.trained_model(_data((8, 8, 3), n=40), "true", 0, None, None, print)
    with pytest.raises(SanityError, match="model.weights must be one of random, trained"):
        check("model", architectures.declared("conv_sumpool"), {"weights": "imagenet"})


# ------------------------------------------------------------------------------------------ edge similarity

def test_departure_is_the_distance_from_the_maps_median_per_image_and_channel():
    maps = np.zeros((2, 3, 3, 2))
    maps[0, ..., 0] = [[1, 1, 1], [1, 5, 1], [1, 1, -3]]
    maps[0, ..., 1] = 2.0
    maps[1, ..., 0] = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    want = np.zeros_like(maps)
    want[0, ..., 0] = [[0, 0, 0], [0, 4, 0], [0, 0, 4]]
    want[1, ..., 0] = np.abs(maps[1, ..., 0] - 4)
    np.testing.assert_array_equal(departure(maps), want)


def _edge_case():
    """An image of two flat regions; its Sobel map s (0 on most pixels); a map 2 max(s) - s that is flat where the
    image is and dips at its edges, as Sec. 5's gradient: |map| ranks exactly against s (-1), |map - median| = s."""
    image = _square_image(24)[None].astype(np.float32)
    sobel = filters.sobel(image[0, ..., 0])[None, ..., None]
    assert np.median(sobel) == 0
    flat_with_dips = 2 * sobel.max() - sobel
    return image, sobel, flat_with_dips


def test_edge_similarity_of_a_flat_map_with_dips_at_edges_is_minus_one_as_a_map_and_one_as_departure():
    image, sobel, flat_with_dips = _edge_case()
    found = edges.edge_maps(image)
    _close(found["sobel"][0, ..., 0], sobel[0, ..., 0], atol=1e-6)
    result = compare_stage({"m": flat_with_dips}, {"m": flat_with_dips}, {"spearman_abs": {}, "entropy_rise": {}},
                           grid_images=1, edges={"sobel": sobel})
    values = result.methods["m"].edges
    assert set(values) == {"sobel|map|spearman_abs", "sobel|departure|spearman_abs"}  # similarities only
    assert values["sobel|map|spearman_abs"][0] < -0.99    # the paper's clipping at the 99th percentile ties a few
    _close(values["sobel|departure|spearman_abs"], [1.0])
    ranks_kept = compare_stage({"m": flat_with_dips}, {"m": flat_with_dips},
                               {"spearman_abs": {"normalisation": "second_moment"}}, 1, edges={"sobel": sobel})
    _close(ranks_kept.methods["m"].edges["sobel|map|spearman_abs"], [-1.0])
    _close(ranks_kept.methods["m"].edges["sobel|departure|spearman_abs"], [1.0])
    assert compare_stage({"m": sobel}, {"m": sobel}, {"spearman_abs": {}}, 1).methods["m"].edges == {}


def test_edges_table_and_null_from_hand_computed_similarities():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (6, 12, 12, 1)).astype(np.float32)
    found = edges.edge_maps(images)
    maps = rng.normal(size=(6, 12, 12, 1))
    randomized = rng.normal(size=(6, 12, 12, 1))
    comparison = Comparison(["m"], {"spearman_abs": {}, "ssim": {}}, np.arange(10, 16), MemoryStore(),
                            SelfChecks(lambda line: None), grid_images=1, edges=found)
    comparison.set_reference(Stage(0, "trained"), lambda: {"m": maps})
    comparison.add(Stage(1, "all"), 0, lambda: {"m": randomized})
    comparison.finish()
    summary = edges.summarize(comparison.edge_table("toy", "cascading"), comparison.edge_null_table(seed=3))
    assert list(summary.columns) == edges.COLUMNS and len(summary) == 2 * 2 * 2 * 2   # stages x edges x views x metrics
    first, second = report.null_pairs(6, 3)
    for stage, shown in ((0, maps), (1, randomized)):
        for view, of in (("map", shown), ("departure", departure(shown))):
            row = summary[(summary["stage"] == stage) & (summary["edge"] == "sobel") & (summary["view"] == view)
                          & (summary["metric"] == "ssim")].iloc[0]
            values, _ = metrics.compare(found["sobel"], of, "ssim")
            _close(row["mean"], values.mean())
            _close([row["ci_low"], row["ci_high"]], report.interval(values, (-1, 1)))
            base = departure(maps[first]) if view == "departure" else maps[first]
            null, _ = metrics.compare(found["sobel"][second], base, "ssim")
            _close(row["null_similarity"], null.mean())
            assert row["n"] == 6 and row["null_n"] == 3


class TableCells(HTMLParser):
    """The <td> texts of the table with id `table_id`, row by row."""

    def __init__(self, html: str, table_id: str):
        super().__init__()
        self.table_id, self.rows, self.inside, self.cell = table_id, [], False, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.inside = dict(attrs).get("id") == self.table_id
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag == "td":
            self.cell = ""

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.rows[-1].append(self.cell.strip())
            self.cell = None
        elif tag == "table":
            self.inside = False


def test_conv_sumpool_on_photos_writes_edge_similarity_to_edges_csv_the_figure_and_the_page(sanity, tmp_path):
    result = sanity("run", "model=conv_sumpool", "data=images",
                    "method=[gradient,guided_backprop,integrated_gradients]", "metric=[spearman_abs,ssim]",
                    "budget.photo_images=4", "data.size=64")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "self-check skipped: Guided Backprop equals Gradient on conv_sumpool" in result.stdout + result.stderr
    run = run_dirs(tmp_path)[0]
    table = pd.read_csv(run / "edges.csv")
    assert set(table["stage"]) == {0, 1} and set(table["edge"]) == {"sobel", "canny"}
    assert set(table["view"]) == {"map", "departure"} and set(table["metric"]) == {"spearman_abs", "ssim"}
    assert len(table) == 3 * 2 * 2 * 2 * 2 and (table["n"] == 4).all() and (table["null_n"] == 2).all()
    by_method = table.set_index(["method", "stage", "edge", "view", "metric"]).sort_index()
    _close(by_method.loc["guided_backprop", "mean"].to_numpy(), by_method.loc["gradient", "mean"].to_numpy())
    assert set(pd.read_csv(run / "metrics.csv")["metric"]) == {"spearman_abs", "ssim"}
    assert list(pd.read_csv(run / "metrics.csv").columns) == report.METRIC_COLUMNS
    html = (run / "report.html").read_text()
    rows = [row for row in TableCells(html, "edges").rows if row]
    assert [row[0] for row in rows] == ["gradient", "guided_backprop", "integrated_gradients"]
    trained = by_method.loc[("gradient", 0, "sobel", "departure", "spearman_abs"), "mean"]
    assert rows[0][4].startswith(f"{trained:.3f}")
    assert "edges.csv" in html and (run / "similarity.png").stat().st_size > 10_000


def test_linear_cascading_edge_similarity_is_that_of_its_weights_computed_by_hand(sanity, tmp_path):
    """model=linear explains every image by w_t: its Gradient's edge similarity is Spearman(|w_t|, Sobel(x))."""
    from sanity_cli.data import load_dataset
    from sanity_cli.seeds import RANDOM_WEIGHTS, derive_seed

    result = sanity("run", "model=linear", "test=cascading", "data.source=bundled", "method=[gradient,sobel]",
                    "metric=[spearman_abs]")
    assert result.returncode == 0, result.stderr[-3000:]
    run = run_dirs(tmp_path)[0]
    manifest = json.loads((run / "manifest.json").read_text())
    ids, targets = manifest["explained_images"], manifest["targets"]
    x = load_dataset("mnist", "bundled", log=lambda line: None).x_test[ids]
    w = replace(architectures.get("linear"), shape=(28, 28, 1)).build(
        seed=derive_seed(0, RANDOM_WEIGHTS)).get_layer("logits").kernel.numpy()
    w_t = w[:, targets].T.reshape(x.shape).astype(np.float32)
    sobel = np.stack([filters.sobel(image[..., 0].astype(np.float64)) for image in x])[..., None].astype(np.float32)
    want, _ = metrics.compare(sobel, w_t, "spearman_abs")
    table = pd.read_csv(run / "edges.csv").set_index(["method", "stage", "edge", "view"])
    _close(table.loc[("gradient", 0, "sobel", "map"), "mean"], want.mean(), atol=1e-6)
    _close(table.loc[("sobel", 1, "sobel", "map"), "mean"], 1.0)


def test_random_weights_cannot_take_the_data_test(sanity):
    assert_one_line_error(sanity("run", "model=conv_sumpool", "test=data", "data.source=bundled"),
                          "model.weights=random is never trained: use model.weights=trained")
