"""The verdict: null similarity, the baseline rule, preconditions and self-checks, on hand-made cases."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sanity_cli import report
from sanity_cli.checks import SelfChecks, finite_rows, maps_differ
from sanity_cli.methods.engine import engine_for
from sanity_cli.stages import StageResult, compare_stage


def test_null_pairs_are_disjoint_pairs_of_different_images():
    for n in (2, 3, 10, 101):
        first, second = report.null_pairs(n, seed=5)
        assert len(first) == len(second) == n // 2
        together = np.concatenate([first, second])
        assert len(set(together.tolist())) == len(together)   # every image in at most one pair
        assert (first != second).all() and together.max() < n
    np.testing.assert_array_equal(report.null_pairs(10, 5)[1], report.null_pairs(10, 5)[1])
    assert not np.array_equal(report.null_pairs(50, 5)[1], report.null_pairs(50, 6)[1])
    assert len(report.null_pairs(1, 0)[0]) == 0


def test_an_interval_needs_two_values():
    mean, low, high, n = report.mean_interval(np.array([0.4, np.nan]))
    assert mean == 0.4 and n == 1 and np.isnan(low) and np.isnan(high)


def test_null_similarity_of_a_hand_made_case():
    """Three images; pair values 0.2, 0.4, 0.9 (one undefined pair is left out): mean and t-interval by hand."""
    null = pd.DataFrame({"method": "m", "metric": "spearman_abs", "image": [0, 1, 2, 3],
                         "other_image": [1, 2, 3, 0], "value": [0.2, 0.4, 0.9, np.nan],
                         "undefined": [False, False, False, True]})
    row = report.summarize_null(null).iloc[0]
    values = np.array([0.2, 0.4, 0.9])
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / np.sqrt(3)
    assert row["null_similarity"] == pytest.approx(0.5)
    assert row["null_ci_low"] == pytest.approx(0.5 - half)
    assert row["null_ci_high"] == pytest.approx(1.0), "0.5 + %.2f is clipped to the metric's range" % half
    assert row["null_n"] == 3


def test_intervals_of_similarities_stay_inside_their_range_around_the_mean():
    """Two images at 0.95 and -0.5: mean +- t s / sqrt(n) is [-9.0, +9.4], clipped to [-1, 1]; an interval that
    fits stays the plain t-interval; it always contains the mean, also with a value at a bound; a metric without a
    range keeps the plain t-interval."""
    values = np.array([0.95, -0.5])
    plain = report.interval(values)
    assert plain[0] < -1 and plain[1] > 1
    assert report.interval(values, (-1.0, 1.0)) == (-1.0, 1.0)
    inside = np.array([0.2, 0.3, 0.25, 0.35])
    assert report.interval(inside, (-1.0, 1.0)) == pytest.approx(report.interval(inside))
    assert report.interval(np.array([1.0, 1.0, 1.0]), (-1.0, 1.0)) == (1.0, 1.0)
    skewed = np.array([0.999] * 50 + [0.0] * 5)
    low, high = report.interval(skewed, (-1.0, 1.0))
    assert low < skewed.mean() < high <= 1.0
    table = pd.DataFrame({"model": "m", "test": "cascading", "stage": 1, "block": "b", "method": "g",
                          "metric": ["spearman_abs", "spearman_abs", "ssim", "ssim"], "image": [0, 1, 0, 1],
                          "repeat": 0, "value": [0.95, -0.5, 0.99, -0.9], "undefined": False})
    summary = report.summarize(table)
    assert (summary["ci_low"] >= -1).all() and (summary["ci_high"] <= 1).all()


def test_independent_interval_is_over_images_of_their_mean_over_blocks():
    """Two blocks, three images: per-image means over blocks 0.3, 0.5, 0.1 -> mean 0.3 and their interval,
    not the range of the two blocks' intervals."""
    rows = []
    for stage, values in ((1, [0.2, 0.6, 0.0]), (2, [0.4, 0.4, 0.2])):
        for image, value in enumerate(values):
            rows.append(dict(model="m", test="independent", stage=stage, block=f"b{stage}", method="g",
                             metric="spearman_abs", image=image, repeat=0, value=value, undefined=False))
    metrics = pd.DataFrame(rows)
    null = pd.DataFrame({"method": "g", "metric": "spearman_abs", "null_similarity": 0.0, "null_ci_low": -0.1,
                         "null_ci_high": 0.1, "null_n": 3}, index=[0])
    table = report.verdict(report.summarize(metrics), "independent", "spearman_abs", set(), null=null,
                           metrics=metrics).iloc[0]
    per_image = np.array([0.3, 0.5, 0.1])
    half = stats.t.ppf(0.975, 2) * per_image.std(ddof=1) / np.sqrt(3)
    assert table["similarity"] == pytest.approx(0.3) and table["n"] == 3
    assert (table["ci_low"], table["ci_high"]) == pytest.approx((0.3 - half, 0.3 + half))
    assert "CI over images" in table["compared"]


@pytest.mark.parametrize("similarity, ci_low, ci_high, null_high, expected", [
    (0.10, 0.05, 0.15, 0.20, "PASS"),           # its whole interval at or below the null's upper bound
    (0.15, 0.10, 0.20, 0.20, "PASS"),           # touching it
    (0.15, 0.05, 0.25, 0.20, "INCONCLUSIVE"),   # mean below, but too few images to say (wide interval)
    (0.30, 0.15, 0.45, 0.20, "INCONCLUSIVE"),   # above, but its interval reaches into the null's
    (0.60, 0.50, 0.70, 0.20, "FAIL"),           # its whole interval lies above the null's
    (np.nan, np.nan, np.nan, 0.20, "INCONCLUSIVE"),
    (0.10, 0.05, 0.15, np.nan, "INCONCLUSIVE"),
    (0.10, np.nan, np.nan, 0.20, "INCONCLUSIVE"),
    (0.99, 0.98, 1.00, 1.00, "INCONCLUSIVE"),   # issue 30: a null reaching 1 lets nothing FAIL: no PASS either
    (0.10, 0.05, 0.15, 1.00, "INCONCLUSIVE"),
])
def test_baseline_rule(similarity, ci_low, ci_high, null_high, expected):
    outcome, reason = report.decide(similarity, ci_low, ci_high, null_high, "baseline", 0.5)
    assert outcome == expected and reason


def test_threshold_rule_is_kept_as_an_option():
    assert report.decide(0.6, 0.5, 0.7, 0.9, "threshold", 0.5)[0] == "FAIL"
    assert report.decide(0.4, 0.3, 0.5, 0.1, "threshold", 0.5)[0] == "PASS"


def _summary(rows):
    return pd.DataFrame([dict(model="m", test="cascading", stage=stage, block=f"b{stage}", method=method,
                              metric="spearman_abs", mean=mean, std=0.1, ci_low=mean - 0.05, ci_high=mean + 0.05,
                              n=10, n_undefined=undefined, seed_std=np.nan)
                         for stage, method, mean, undefined in rows])


def _null(rows):
    return pd.DataFrame([dict(method=method, metric="spearman_abs", null_similarity=mean, null_ci_low=mean - 0.05,
                              null_ci_high=mean + 0.05, null_n=10) for method, mean in rows])


def test_a_method_whose_maps_are_all_constant_at_the_last_stage_is_inconclusive():
    summary = _summary([(0, "cam", 1.0, 0), (1, "cam", 0.5, 0), (2, "cam", np.nan, 10)])
    summary.loc[summary.stage == 2, ["n", "ci_low", "ci_high"]] = [0, np.nan, np.nan]
    row = report.verdict(summary, "cascading", "spearman_abs", set(), null=_null([("cam", 0.2)])).iloc[0]
    assert row["verdict"] == "INCONCLUSIVE" and row["n"] == 0 and "constant" in row["reason"]
    assert "b2" in row["compared"]


def test_verdict_table_uses_the_last_stage_its_null_and_the_preconditions():
    summary = _summary([(0, "gradient", 1.0, 0), (1, "gradient", 0.6, 0), (2, "gradient", 0.1, 0),
                        (2, "guided", 0.7, 0), (2, "cam", 0.1, 3), (2, "sobel", 1.0, 0)])
    null = _null([("gradient", 0.12), ("guided", 0.3), ("cam", 0.2), ("sobel", 0.4)])
    table = report.verdict(summary, "cascading", "spearman_abs", {"sobel"}, null=null,
                           problems={"guided": ["the guided ReLU swap did not engage"]}).set_index("method")
    assert table.loc["gradient", "verdict"] == "PASS"
    assert table.loc["gradient", "similarity"] == pytest.approx(0.1)       # last stage, not stage 1
    assert table.loc["gradient", "null_similarity"] == pytest.approx(0.12)
    assert table.loc["gradient", "null_ci_high"] == pytest.approx(0.17)
    assert table.loc["guided", "verdict"] == "INCONCLUSIVE"
    assert "did not engage" in table.loc["guided", "reason"]
    assert table.loc["cam", "verdict"] == "INCONCLUSIVE" and "constant map" in table.loc["cam", "reason"]
    assert table.loc["sobel", "verdict"] == "reference" and table.loc["sobel", "role"] == "control"
    everything = report.verdict(summary, "cascading", "spearman_abs", {"sobel"}, null=null,
                                problems={"*": ["permuted model did not memorise"]}).set_index("method")
    assert (everything.loc[["gradient", "guided", "cam"], "verdict"] == "INCONCLUSIVE").all()
    assert everything.loc["sobel", "verdict"] == "reference"
    text = report.format_verdict(everything.reset_index())
    assert "reference rows (sobel)" in text and "permuted model did not memorise" in text


def test_guided_swap_self_check_fails_loudly_on_a_model_without_relu():
    """On a tanh network the guided ReLU swap has nothing to replace: Guided Backprop is the gradient, the
    self-check fails with a log line, and the Guided Backprop family's verdicts become INCONCLUSIVE."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    hidden = keras.layers.Dense(8, activation="tanh")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    images = np.random.default_rng(0).uniform(size=(4, 6, 6, 1)).astype(np.float32)
    targets = np.array([0, 1, 2, 0], np.int32)
    lines = []
    checks = SelfChecks(lines.append)
    assert checks.check_guided_swap(engine_for(model), images, targets) is False
    assert any(line.startswith("self-check FAILED: Guided Backprop") for line in lines)
    problems = checks.problems({"guided_backprop", "guided_gradcam"})
    assert set(problems) == {"guided_backprop", "guided_gradcam"}
    assert checks.as_dict()["guided_swap_engaged"] is False

    relu_inputs = keras.Input((6, 6, 1))
    relu_hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(relu_inputs))
    relu_model = keras.Model(relu_inputs, keras.layers.Dense(3)(relu_hidden))
    assert SelfChecks(lines.append).check_guided_swap(engine_for(relu_model), images, targets) is True


def test_stage_that_left_the_logits_unchanged_makes_every_verdict_inconclusive():
    lines = []
    checks = SelfChecks(lines.append)
    logits = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert checks.check_stage("stage-01-repeat-0", "logits", logits, logits + 0.5) is True
    assert checks.check_stage("stage-02-repeat-0", "fc1", logits, logits.copy()) is False
    assert "stage-02-repeat-0" in checks.problems(set())["*"][0]
    assert any("left the model's logits unchanged" in line for line in lines)
    assert checks.as_dict()["all_stages_changed_logits"] is False


def test_maps_with_nan_are_left_undefined_not_compared():
    rng = np.random.default_rng(0)
    reference = {"m": rng.normal(size=(3, 8, 8, 1)).astype(np.float32)}
    stage = {"m": reference["m"] * 2}
    stage["m"][1, 2, 2, 0] = np.nan
    unit = StageResult.from_npz(compare_stage(reference, stage, {"spearman_abs": {}}, grid_images=3).to_npz())
    result = unit.methods["m"]  # through the unit's own file format, as a resumed run reads it
    np.testing.assert_array_equal(result.undefined["spearman_abs"], [False, True, False])
    np.testing.assert_allclose(result.values["spearman_abs"][[0, 2]], 1.0)
    assert np.isnan(result.values["spearman_abs"][1])
    np.testing.assert_array_equal(result.nonfinite, [False, True, False])
    assert np.isfinite(result.absolute).all()
    np.testing.assert_array_equal(finite_rows(stage["m"]), [True, False, True])


def test_maps_differ_is_relative():
    a = np.ones((2, 3)) * 1e3
    assert not maps_differ(a, a + 1e-6)
    assert maps_differ(a, a + 1.0)
    assert not maps_differ(np.zeros(3), np.zeros(3))


def test_a_unit_of_another_format_is_recomputed():
    """The unit format is versioned: a unit written by an older sanity (its f-string keys) reads as missing."""
    rng = np.random.default_rng(0)
    reference = {"m": rng.normal(size=(2, 8, 8, 1)).astype(np.float32)}
    arrays = compare_stage(reference, reference, {"spearman_abs": {}, "ssim": {}}, grid_images=1).to_npz()
    assert StageResult.from_npz({"value/m/spearman_abs": np.ones(2)}) is None
    assert StageResult.from_npz({**arrays, "format": np.array(1)}) is None
    back = StageResult.from_npz(arrays).methods["m"]
    assert list(back.values) == ["spearman_abs", "ssim"] and np.allclose(back.values["ssim"], 1.0)


def test_few_images_never_pass_a_method_that_did_not_change(sanity, tmp_path):
    """Issue 30: with 4 images the null rests on 2 pairs (t(0.975, 1) = 12.7) and its interval reaches 1, so
    Gradient x Input, whose maps barely change under randomization on MNIST (0.99), was PASSed; no verdict can be
    drawn there. The same run at 40 images FAILs it."""
    for n, expected in ((4, "INCONCLUSIVE"), (40, "FAIL")):
        result = sanity("run", "method=[gradient_x_input]", f"n_images={n}", "metric=[spearman_abs]", "plots=false",
                        f"hydra.run.dir=r{n}")
        assert result.returncode == 0, result.stderr[-2000:]
        row = pd.read_csv(tmp_path / f"r{n}" / "verdict.csv").iloc[0]
        assert row["similarity"] > 0.9 and row["verdict"] == expected, (n, row.to_dict())
        if n == 4:
            assert row["null_ci_high"] >= 1.0 and "even maps that did not change could not FAIL" in row["reason"]
