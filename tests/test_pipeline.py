"""End-to-end runs of `sanity run` and the paper's central finding on a CNN trained on real MNIST."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg

from conftest import make_idx_dataset, run_dirs

FILES = ["metrics.csv", "summary.csv", "verdict.csv", "models.csv", "manifest.json", "null.csv", "grid_absolute_1.png",
         "grid_diverging_1.png", "similarity.png"]
SMALL = ("n_images=4", "grid_images=2", "budget.smoothgrad_samples=3", "budget.vargrad_samples=3",
         "budget.ig_steps=4")
# Small training for the data test: 300 images, so the permuted-label model memorises within seconds (the CNN in
# about 20 epochs) and the true-label one still generalises (test accuracy about 0.8).
SMALL_TRAINING = ("train.max_train_images=300", "train.epochs=6", "train.permuted.max_epochs=60", "train.batch_size=32")


def finished_run(result, base, files=FILES):
    assert result.returncode == 0, result.stderr[-4000:]
    dirs = run_dirs(base)
    assert len(dirs) == 1, dirs
    for name in files:
        assert (dirs[0] / name).exists(), name
    assert f"results: {dirs[0]}" in result.stdout
    return dirs[0]


def assert_picture(path, min_size=200):
    picture = mpimg.imread(path)
    assert picture.shape[0] > min_size and picture.shape[1] > min_size
    assert picture[..., :3].std() > 0.05, f"{path.name} looks blank"


@pytest.mark.parametrize("model, blocks", [
    ("mnist_cnn", ["trained", "logits", "fc1", "conv2", "conv1"]),
    ("mnist_mlp", ["trained", "logits", "fc3", "fc2", "fc1"]),
])
def test_cascading_writes_every_output(sanity, tmp_path, model, blocks):
    run = finished_run(sanity("run", f"model={model}", "test=cascading", *SMALL), tmp_path)
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.columns) == ["model", "test", "stage", "block", "method", "metric", "image", "repeat",
                                     "value", "undefined"]
    stages = metrics.drop_duplicates("stage").sort_values("stage")
    assert stages["block"].tolist() == blocks
    expected_methods = {"gradient", "gradient_x_input", "integrated_gradients", "smoothgrad_gradient",
                        "smoothgrad_integrated_gradients", "vargrad", "guided_backprop", "sobel", "random"}
    if model == "mnist_cnn":
        expected_methods |= {"gradcam", "guided_gradcam"}
    assert set(metrics["method"]) == expected_methods
    assert set(metrics["metric"]) == {"spearman_abs", "spearman", "ssim", "hog_pearson"}
    assert len(metrics) == len(blocks) * len(expected_methods) * 4 * 4
    trained = metrics[(metrics.stage == 0) & ~metrics.undefined]
    assert np.allclose(trained["value"], 1.0), "stage 0 compares the trained maps with themselves"
    assert metrics.loc[metrics.undefined, "value"].isna().all()
    # the model-free edge control does not change under randomization
    sobel = metrics[(metrics.method == "sobel")]
    assert np.allclose(sobel["value"], 1.0)
    summary = pd.read_csv(run / "summary.csv")
    assert {"mean", "std", "ci_low", "ci_high", "n", "n_undefined"} <= set(summary.columns)
    verdict = pd.read_csv(run / "verdict.csv")
    assert set(verdict["verdict"]) <= {"PASS", "FAIL", "INCONCLUSIVE", "reference"}
    assert {"null_similarity", "null_ci_low", "null_ci_high", "reason", "rule"} <= set(verdict.columns)
    controls = verdict.set_index("method").loc[["sobel", "random"]]
    assert (controls["role"] == "control").all() and (controls["verdict"] == "reference").all()
    # the null: each method's trained-model maps of two different images, in n_images // 2 disjoint pairs
    null = pd.read_csv(run / "null.csv")
    assert list(null.columns) == ["method", "metric", "image", "other_image", "value", "undefined"]
    assert len(null) == len(expected_methods) * 4 * 2 and (null["image"] != null["other_image"]).all()
    row = verdict.set_index("method").loc["gradient"]  # verdict.metric=all: the row holds its deciding metric's values
    assert row["metric"] in row["by_metric"]
    gradient_null = null[(null.method == "gradient") & (null.metric == row["metric"])]["value"]
    assert row["null_similarity"] == pytest.approx(gradient_null.mean())
    manifest = json.loads((run / "manifest.json").read_text())
    checks = manifest["self_checks"]
    assert checks["all_stages_changed_logits"] is True and checks["no_nonfinite_maps"] is True
    assert checks["guided_swap_engaged"] is True and checks["permuted_memorised"] is None
    assert manifest["config"]["model"]["name"] == model
    assert manifest["data_provenance"]["source"] == "bundled"
    assert manifest["versions"]["tensorflow"] and manifest["seed"] == 0
    assert set(manifest["phase_seconds"]) >= {"data", "model", "explain_randomize_compare", "write"}
    for picture in ("grid_absolute_1.png", "grid_diverging_1.png", "similarity.png"):
        assert_picture(run / picture)


@pytest.mark.parametrize("test, order", [("independent", "top_down"), ("cascading", "top_down"),
                                         ("cascading", "bottom_up"), ("independent", "bottom_up")])
def test_each_stage_starts_from_the_right_weights(tmp_path, monkeypatch, test, order):
    """independent: every block is re-initialised starting from the trained weights (the previous stage was
    undone); cascading: starting from the previous stage's weights (earlier blocks stay random), from the logits
    down or, with test.order=bottom_up, from the input up. All end with the trained weights restored."""
    import keras
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from sanity_cli import config, core, models, plans, randomize, spec
    from sanity_cli.checks import SelfChecks
    from sanity_cli.units import UnitStore

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config.config_dir()), version_base="1.3"):
        cfg = compose(config_name="sanity", overrides=[f"test={test}", "method=[gradient]", "metric=[spearman_abs]",
                                                       "n_images=2", f"test.order={order}"])
    GlobalHydra.instance().clear()
    OmegaConf.resolve(cfg)
    keras.utils.set_random_seed(0)
    model = models.mnist_cnn()
    trained = randomize.snapshot(model)
    seen = []
    real = randomize.randomize_block

    def spy(model_, block, **kwargs):
        now = randomize.snapshot(model_)
        seen.append((block.name, sum(not np.array_equal(a, b) for a, b in zip(now, trained))))
        return real(model_, block, **kwargs)

    monkeypatch.setattr(randomize, "randomize_block", spy)
    images = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype(np.float32)
    units = UnitStore(tmp_path, "fingerprint", log=lambda *_: None)
    units.open()
    try:
        run_spec = spec.parse(cfg)
        plans.compare_all(run_spec, model, core.applicable_methods(run_spec, model, print), images, np.array([1, 2]),
                          np.arange(2), units, SelfChecks(lambda *_: None))
    finally:
        units.release()
    top_down = ["logits", "fc1", "conv2", "conv1"]
    assert [name for name, _ in seen] == (top_down if order == "top_down" else top_down[::-1])
    changed_before = [count for _, count in seen]
    if test == "independent":
        assert changed_before == [0, 0, 0, 0]
    else:  # each earlier block's kernel (its bias goes back to the same constant 0.1)
        assert changed_before == [0, 1, 2, 3]
    assert all(np.array_equal(a, b) for a, b in zip(randomize.snapshot(model), trained))


def _cascading_run(tmp_path, monkeypatch, method: str):
    """A callable running the CNN's cascading test on 3 random images into tmp_path (resumable), recording every
    separate logits prediction and every self-check's (before, after, the model's own logits at that moment)."""
    import keras
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from sanity_cli import config, core, methods, models, plans, spec
    from sanity_cli.checks import SelfChecks
    from sanity_cli.units import UnitStore

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config.config_dir()), version_base="1.3"):
        cfg = compose(config_name="sanity", overrides=["test=cascading", f"method=[{method}]",
                                                       "metric=[spearman_abs]", "n_images=3"])
    GlobalHydra.instance().clear()
    OmegaConf.resolve(cfg)
    keras.utils.set_random_seed(0)
    model = models.mnist_cnn()
    engine = methods.engine.engine_for(model, methods.EngineOptions())
    images = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    predicted, compared = [], []
    real_predict = type(engine).predict_logits
    monkeypatch.setattr(type(engine), "predict_logits",
                        lambda self, x: predicted.append(1) or real_predict(self, x))

    def run():
        predicted.clear()
        compared.clear()
        checks = SelfChecks(lambda *_: None)
        real_check = checks.check_stage

        def check(unit, block, before, after):
            compared.append((before, after, model(images, training=False).numpy()))
            return real_check(unit, block, before, after)

        checks.check_stage = check
        units = UnitStore(tmp_path, "fingerprint", log=lambda *_: None)
        units.open()
        try:
            run_spec = spec.parse(cfg)
            plans.compare_all(run_spec, model, core.applicable_methods(run_spec, model, print), images,
                              np.array([1, 2, 3]), np.arange(3), units, checks)
        finally:
            units.wait()
            units.release()
        return checks

    return run, predicted, compared, model(images, training=False).numpy()


@pytest.mark.parametrize("method, separate_passes", [("gradient", 0), ("smoothgrad", 5)])
def test_a_stages_logits_check_reuses_its_gradient_passes(tmp_path, monkeypatch, method, separate_passes):
    """The self-check that randomizing a block changed the logits reads them from the passes that explain the
    stage when a method sends the images themselves through the model (no forward pass of its own); with
    SmoothGrad alone each of the 5 stages (trained + 4 blocks) predicts them. Either way every stage is checked
    against the right logits: the previous stage's, or the trained model's."""
    run, predicted, compared, trained_logits = _cascading_run(tmp_path, monkeypatch, method)
    checks = run()
    assert len(predicted) == separate_passes
    assert len(compared) == 4 and all(checks.stages_changed_logits.values())
    np.testing.assert_allclose(compared[0][0], trained_logits, rtol=1e-5, atol=1e-6)
    for k, (before, after, now) in enumerate(compared):
        np.testing.assert_allclose(after, now, rtol=1e-5, atol=1e-6)  # the randomized model's own logits
        if k:
            np.testing.assert_array_equal(before, compared[k - 1][1])  # cascading: against the previous stage


def test_a_resumed_run_predicts_every_stages_logits_and_repairs_a_damaged_reference(tmp_path, monkeypatch):
    """Logits from differently shaped calls differ by float rounding, which could hide a stage whose
    randomization changed nothing: a resumed run takes every stage's logits one way (predicted), never mixing
    them with those of the passes. A damaged reference unit is explained and saved again even though stage 0's
    own unit survived."""
    run, predicted, compared, trained_logits = _cascading_run(tmp_path, monkeypatch, "gradient")
    run()
    assert not predicted
    units = tmp_path / "units"
    (units / "stage-04-repeat-0.npz").unlink()
    (units / "reference.npz").write_bytes(b"damaged")
    checks = run()
    assert len(predicted) == 5  # the trained model's and each of the 4 stages' (3 of them finished before)
    assert len(compared) == 4 and all(checks.stages_changed_logits.values())
    np.testing.assert_allclose(compared[0][0], trained_logits, rtol=1e-5, atol=1e-6)
    with np.load(units / "reference.npz") as saved:  # saved again, readable
        assert saved["gradient"].shape == (3, 28, 28, 1)
    assert (units / "stage-04-repeat-0.npz").exists()


def test_independent_restores_between_stages(sanity, tmp_path):
    run = finished_run(sanity("run", "model=mnist_cnn", "test=independent", "method=[gradient,sobel]", *SMALL),
                       tmp_path)
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics.drop_duplicates("stage")["block"].tolist() == ["trained", "logits", "fc1", "conv2", "conv1"]
    verdict = pd.read_csv(run / "verdict.csv")
    assert "each block alone" in verdict.loc[verdict.method == "gradient", "compared"].item()


@pytest.mark.parametrize("model", ["mnist_cnn", "mnist_mlp"])
def test_data_randomization_trains_the_permuted_model(sanity, tmp_path, model):
    run = finished_run(sanity("run", f"model={model}", "test=data", *SMALL, *SMALL_TRAINING), tmp_path)
    models = pd.read_csv(run / "models.csv")
    assert models["labels"].tolist() == ["true", "permuted"]
    true_model, permuted = models.iloc[0], models.iloc[1]
    assert permuted["train_accuracy"] >= 0.95, "the permuted-label model must memorise its labels"
    assert permuted["test_accuracy"] < 0.25, "memorised random labels do not generalise"
    assert true_model["test_accuracy"] > 0.6
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics.drop_duplicates("stage")["block"].tolist() == ["true_labels", "permuted_labels"]
    verdict = pd.read_csv(run / "verdict.csv")
    assert (verdict["compared"] == "true-label vs permuted-label model").all()
    assert json.loads((run / "manifest.json").read_text())["self_checks"]["permuted_memorised"] is True


def test_data_test_is_inconclusive_when_the_permuted_model_did_not_memorise(sanity, tmp_path):
    """A permuted-label model that stopped short of its memorisation target proves nothing: every verdict is
    INCONCLUSIVE, with the reason, and the run says so."""
    result = sanity("run", "model=mnist_mlp", "test=data", "method=[gradient,guided_backprop,sobel]", *SMALL,
                    "train.max_train_images=1000", "train.permuted.max_epochs=1", "train.batch_size=64")
    run = finished_run(result, tmp_path)
    permuted = pd.read_csv(run / "models.csv").iloc[1]
    assert permuted["train_accuracy"] < 0.95 and not permuted["memorised"]
    verdict = pd.read_csv(run / "verdict.csv").set_index("method")
    for method in ("gradient", "guided_backprop"):
        assert verdict.loc[method, "verdict"] == "INCONCLUSIVE"
        assert "has not memorised" in verdict.loc[method, "reason"]
    assert verdict.loc["sobel", "verdict"] == "reference"
    assert "self-check FAILED: the permuted-label model fits only" in result.stderr + result.stdout
    assert json.loads((run / "manifest.json").read_text())["self_checks"]["permuted_memorised"] is False


def test_fashion_mnist_from_generated_idx_files(sanity, tmp_path):
    data_dir = make_idx_dataset(tmp_path / "fashion")
    run = finished_run(sanity("run", "data=fashion_mnist", "data.source=idx", f"data.path={data_dir}",
                              "method=[gradient,guided_backprop]", *SMALL), tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["data_provenance"]["source"] == "idx"
    assert manifest["config"]["data"]["name"] == "fashion_mnist"
    assert (pd.read_csv(run / "metrics.csv")["model"] == "mnist_cnn").all()


def test_same_seed_same_metrics(sanity, tmp_path):
    args = ("run", "method=[gradient,smoothgrad_gradient,random]", "metric=[spearman_abs,ssim]",
            "verdict.metric=spearman_abs", "n_images=3", "plots=false", "budget.smoothgrad_samples=4")
    first = sanity(*args, f"hydra.run.dir={tmp_path / 'a'}")
    second = sanity(*args, f"hydra.run.dir={tmp_path / 'b'}")
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-3000:]
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()


@pytest.mark.slow
def test_gradient_collapses_while_guided_backprop_survives(sanity, tmp_path):
    """The paper's central finding (Sec. 3.1, Fig. 2): under full cascading randomization of a CNN trained on
    real MNIST, the gradient's rank correlation with its trained-model map falls far below 1, while guided
    backprop's stays clearly higher (its maps keep looking like the input's edges)."""
    run = finished_run(sanity("run", "model=mnist_cnn", "test=cascading", "n_images=48",
                              "method=[gradient,guided_backprop]", "metric=[spearman_abs,ssim]",
                              "plots=false"), tmp_path, files=FILES[:5])
    summary = pd.read_csv(run / "summary.csv")
    abs_rank = summary[summary.metric == "spearman_abs"].pivot(index="stage", columns="method", values="mean")
    last = abs_rank.index.max()
    assert abs_rank.loc[0, "gradient"] == pytest.approx(1.0)
    assert abs_rank.loc[last, "gradient"] < 0.7
    assert abs_rank.loc[1:, "gradient"].min() < 0.45
    assert abs_rank.loc[last, "guided_backprop"] > abs_rank.loc[last, "gradient"] + 0.1
    assert (abs_rank.loc[1:, "guided_backprop"] > abs_rank.loc[1:, "gradient"]).all()
    ssim = summary[summary.metric == "ssim"].pivot(index="stage", columns="method", values="mean")
    assert ssim.loc[last, "guided_backprop"] > ssim.loc[last, "gradient"] + 0.2
    verdict = pd.read_csv(run / "verdict.csv").set_index("method")
    assert verdict.loc["gradient", "verdict"] == "PASS"
    # Guided Backprop's randomized maps stay above its null (maps of two different digits); on 48 images the
    # intervals may still touch, so the verdict is FAIL or INCONCLUSIVE, never PASS
    assert verdict.loc["guided_backprop", "verdict"] in ("FAIL", "INCONCLUSIVE")
    assert verdict.loc["guided_backprop", "similarity"] > verdict.loc["guided_backprop", "null_similarity"]
    assert verdict.loc["gradient", "similarity"] < verdict.loc["gradient", "null_similarity"] + 0.02
    # with the released code's initializers the randomized gradient keeps almost nothing of its structure
    assert abs_rank.loc[last, "gradient"] < 0.25


@pytest.mark.slow
def test_default_run_gives_the_papers_verdicts(sanity, tmp_path):
    """The README's first command, unchanged (issue 24): the smoke model's Gradient maps carry the digit (two
    different digits' maps correlate far more than two seeded noise maps: its null similarity clearly exceeds the
    random control's), Gradient and SmoothGrad PASS, Guided Backprop FAILs (48 images are enough), Guided Grad-CAM
    never passes, and the model-free controls are reference rows."""
    result = sanity("run")
    run = finished_run(result, tmp_path)
    verdict = pd.read_csv(run / "verdict.csv").set_index("method")
    assert verdict.loc["gradient", "verdict"] == "PASS"
    assert verdict.loc["smoothgrad_gradient", "verdict"] == "PASS"
    assert verdict.loc["guided_backprop", "verdict"] == "FAIL"
    assert verdict.loc["guided_gradcam", "verdict"] in ("FAIL", "INCONCLUSIVE")
    assert set(verdict.loc[["sobel", "random"], "verdict"]) == {"reference"}
    assert "reference rows (" in result.stdout
    summary = pd.read_csv(run / "summary.csv")
    first = summary[(summary.metric == "spearman_abs") & (summary.stage == 1)].set_index("method")["mean"]
    null = verdict.loc[verdict.metric == "spearman_abs", "null_similarity"]
    assert null["gradient"] > null["random"] + 0.2, null
    # the structure declines through the cascade (the notebook's 0.60 after the logits), not gone at stage one
    assert first["gradient"] > null["gradient"] + 0.05, (first["gradient"], null["gradient"])


def test_image_choice_first_takes_the_test_splits_first_images():
    """image_choice=first: x_test[:n], as the released notebooks' demo batch; random: a seeded sorted sample."""
    from sanity_cli.data import load_dataset
    from sanity_cli.core import choose_images

    data = load_dataset("mnist", "bundled", log=lambda line: None)
    np.testing.assert_array_equal(choose_images(data, 10, 0, "first"), np.arange(10))
    sample = choose_images(data, 10, 0)
    assert len(set(sample)) == 10 and list(sample) == sorted(sample) and not np.array_equal(sample, np.arange(10))
