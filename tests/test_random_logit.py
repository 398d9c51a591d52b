"""Random logit (Sixt et al. 2020): explain another class on the same model and images. On the (smoke-trained)
MNIST CNN, Guided Backprop's maps hardly depend on the class (FAIL), while SmoothGrad's change with it as much as
with the image (PASS) and the plain gradient is at least not FAIL, as Sixt et al. and Nie et al. (2018) found."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sanity_cli.plans import other_classes


def test_other_classes_are_uniform_over_the_other_classes_and_seeded():
    targets = np.repeat(np.arange(10), 2000)
    others = other_classes(targets, 10, seed=4)
    assert (others != targets).all() and others.min() == 0 and others.max() == 9
    for target in range(10):  # each of the nine others about equally often
        counts = np.bincount(others[targets == target], minlength=10)
        assert counts[target] == 0 and counts.max() - np.delete(counts, target).min() < 120
    np.testing.assert_array_equal(others, other_classes(targets, 10, seed=4))
    assert not np.array_equal(others, other_classes(targets, 10, seed=5))


def test_guided_backprop_does_not_depend_on_the_class(sanity, tmp_path):
    """Sixt et al.: Gradient's signed map of another class is unlike the explained class's, Guided Backprop's is
    the same map. The verdict is the signed Spearman's whatever metric=[...] holds: the two maps are of the same
    image, so their |map| supports agree for any class (spearman_abs calls Gradient alike too, 0.46 against a null
    of 0.31 on 16 images)."""
    result = sanity("run", "test=random_logit", "method=[gradient,smoothgrad_gradient,guided_backprop,sobel]",
                    "metric=[spearman_abs]", "n_images=16", "plots=false", "hydra.run.dir=run")
    assert result.returncode == 0, result.stderr[-2000:]
    verdict = pd.read_csv(tmp_path / "run" / "verdict.csv").set_index("method")
    assert (verdict["metric"] == "spearman").all()
    assert verdict.loc["guided_backprop", "verdict"] == "FAIL"
    assert verdict.loc["smoothgrad_gradient", "verdict"] == "PASS"
    assert verdict.loc["gradient", "verdict"] != "FAIL"
    assert verdict.loc["guided_backprop", "similarity"] > verdict.loc["gradient", "similarity"] + 0.5
    assert verdict.loc["sobel", "verdict"] == "reference"
    assert (verdict["compared"] == "the explained class vs a random other class, same model and image").all()
