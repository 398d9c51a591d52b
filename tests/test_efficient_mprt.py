"""Efficient MPRT (Hedström et al. 2023): the relative rise in histogram entropy from the trained to the fully
randomized model's maps, judged against the same score from one image's trained map to another's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from sanity_cli import metrics, sanity_tests
from sanity_cli.errors import SanityError
from sanity_cli.report import decide


def test_entropy_of_known_histograms():
    assert metrics.discrete_entropy(np.array([0.0, 0.0, 1.0, 1.0]), n_bins=2) == pytest.approx(np.log(2), abs=1e-15)
    assert metrics.discrete_entropy(np.arange(100.0), n_bins=100) == pytest.approx(np.log(100), abs=1e-13)
    # 1 value in the first bin, 3 in the last: -(1/4 ln 1/4 + 3/4 ln 3/4)
    assert metrics.discrete_entropy(np.array([0.0, 1.0, 1.0, 1.0]), n_bins=10) == pytest.approx(
        -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)), abs=1e-15)
    assert metrics.discrete_entropy(np.full(50, 3.0)) == 0.0          # a constant map: one bin


def test_entropy_rise_by_hand_and_against_numpy_scipy():
    reference = np.array([0.0, 0.0, 3.0, 3.0]).reshape(1, 2, 2, 1)   # 2 of 4 bins: ln 2
    other = np.array([0.0, 1.0, 2.0, 3.0]).reshape(1, 2, 2, 1)       # 4 of 4 bins: ln 4
    values, undefined = metrics.compare(reference, other, "entropy_rise", n_bins=4)
    assert values[0] == pytest.approx(1.0, abs=1e-15) and not undefined[0]   # (ln 4 - ln 2) / ln 2
    values, undefined = metrics.compare(other, reference, "entropy_rise", n_bins=4)
    assert values[0] == pytest.approx(-0.5, abs=1e-15)                        # (ln 2 - ln 4) / ln 4
    values, undefined = metrics.compare(np.ones((1, 2, 2, 1)), other, "entropy_rise", n_bins=4)
    assert undefined[0] and np.isnan(values[0])                               # H(reference) = 0
    # raw (the default, as Quantus' eMPRT): the histogram of every value, channels included
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 9, 9, 3)) ** 3, rng.standard_normal((6, 9, 9, 3))
    h = lambda m: scipy.stats.entropy(np.histogram(m, bins=100)[0])  # noqa: E731
    expected = [(h(y) - h(x)) / h(x) for x, y in zip(a, b)]
    np.testing.assert_allclose(metrics.compare(a, b, "entropy_rise")[0], expected, rtol=1e-12)
    assert np.all(np.array(expected) > 0)  # a cubed Gaussian is heavy-tailed: fewer bins used than a Gaussian's


def test_entropy_rise_parameters_are_checked():
    with pytest.raises(SanityError, match="n_bins must be an integer >= 2"):
        metrics.check_params("entropy_rise", {"n_bins": 1})
    with pytest.raises(SanityError, match="unknown parameter.*n_bins of metric ssim"):
        metrics.check_params("ssim", {"n_bins": 10})
    with pytest.raises(SanityError, match="normalisation must be one of paper, signed, second_moment, max, got 'raw'"):
        metrics.check_params("ssim", {"normalisation": "raw"})
    metrics.check_params("entropy_rise", {"normalisation": "second_moment", "n_bins": 50})


def test_the_mirrored_rule_for_a_score_where_higher_means_less_alike():
    # the rise's whole interval above the null's upper bound: PASS; at or below it: FAIL; straddling: INCONCLUSIVE
    assert decide(0.5, 0.4, 0.6, 0.3, "baseline", 0.5, higher_is_more_similar=False)[0] == "PASS"
    assert decide(0.1, 0.0, 0.2, 0.3, "baseline", 0.5, higher_is_more_similar=False)[0] == "FAIL"
    assert decide(0.1, 0.0, 0.3, 0.3, "baseline", 0.5, higher_is_more_similar=False)[0] == "FAIL"
    assert decide(0.3, 0.2, 0.4, 0.3, "baseline", 0.5, higher_is_more_similar=False)[0] == "INCONCLUSIVE"
    assert decide(0.3, 0.2, 0.4, np.nan, "baseline", 0.5, higher_is_more_similar=False)[0] == "INCONCLUSIVE"


def test_the_registry_runs_two_stages_judged_on_the_entropy_rise():
    spec = sanity_tests.get("efficient_mprt")
    assert (spec.family, spec.all_at_once, spec.judged, spec.verdict_metric) == (
        "model_randomization", True, "last_stage", "entropy_rise")
    assert not metrics.METRICS["entropy_rise"].higher_is_more_similar


def test_efficient_mprt_on_the_mnist_cnn(sanity, tmp_path):
    """Two stages (trained, all blocks) with the same weights as cascading's last stage; IG and Gradient x Input,
    whose maps are mostly the black background's zeros whatever the model, show no rise at all (FAIL); the Sobel
    control's rise is exactly 0; the entropy rise is judged though metric=[...] does not list it."""
    common = ("method=[gradient,integrated_gradients,gradient_x_input,sobel]", "metric=[spearman_abs]",
              "n_images=16")
    result = sanity("run", "test=efficient_mprt", *common, "hydra.run.dir=run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "efficient MPRT" in result.stdout
    run = tmp_path / "run"
    table = pd.read_csv(run / "metrics.csv")
    assert table.drop_duplicates("stage")["block"].tolist() == ["trained", "all blocks"]
    assert set(table["metric"]) == {"spearman_abs", "entropy_rise"}
    verdict = pd.read_csv(run / "verdict.csv").set_index("method")
    assert (verdict["metric"] == "entropy_rise").all()
    assert verdict.loc["integrated_gradients", "verdict"] == "FAIL"
    assert verdict.loc["gradient_x_input", "verdict"] == "FAIL"
    assert verdict.loc["sobel", "verdict"] == "reference" and verdict.loc["sobel", "similarity"] == 0.0
    assert verdict.loc["gradient", "similarity"] > verdict.loc["integrated_gradients", "similarity"]
    null = pd.read_csv(run / "null.csv")
    pairs = null[null["metric"] == "entropy_rise"]
    assert len(pairs) == 4 * 8 and (pairs["image"] != pairs["other_image"]).all()
    assert abs(pairs.loc[pairs["method"] == "gradient", "value"].mean()) < 0.05  # another image: no rise on average
    assert (run / "similarity.png").stat().st_size > 0 and (run / "report.html").exists()
    # the same last stage as cascading (same seeds, every block): identical spearman values
    result = sanity("run", "test=cascading", *common, "hydra.run.dir=cascade")
    assert result.returncode == 0, result.stderr[-2000:]
    cascade = pd.read_csv(tmp_path / "cascade" / "metrics.csv")
    last = cascade[cascade["stage"] == cascade["stage"].max()].set_index(["method", "image"])["value"]
    ours = table[(table["stage"] == 1) & (table["metric"] == "spearman_abs")].set_index(["method", "image"])["value"]
    np.testing.assert_allclose(ours.sort_index(), last.sort_index(), atol=1e-12)


def test_the_threshold_rule_is_refused_for_the_entropy_rise(sanity):
    result = sanity("run", "test=efficient_mprt", "verdict.rule=threshold")
    assert result.returncode == 2
    assert "verdict.rule=threshold needs a similarity; entropy_rise is judged against its null" in result.stderr
