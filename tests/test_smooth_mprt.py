"""Smooth MPRT (Hedström et al. 2023): explanations averaged over noisy copies of each input, then cascading
randomization, bottom-up by default."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sanity_cli import sanity_tests
from sanity_cli.plans import noisy_copies

RUN = ("method=[gradient,guided_backprop,sobel]", "metric=[spearman_abs,ssim]", "n_images=4", "plots=false")


def test_noisy_copies_end_with_the_image_and_scale_with_its_range():
    images = np.stack([np.full((8, 8, 1), 0.5), np.linspace(0, 2, 64).reshape(8, 8, 1)]).astype(np.float32)
    copies = noisy_copies(images, 401, 0.1, seed=3).reshape(401, 2, 8, 8, 1)
    np.testing.assert_array_equal(copies[-1], images)                 # the last copy is noise-free
    noise = copies[:-1] - images
    assert abs(noise[:, 1].std() - 0.1 * 2.0) < 0.01                  # std = magnitude x (max - min)
    np.testing.assert_array_equal(noise[:, 0], 0.0)                   # a constant image has range 0
    np.testing.assert_array_equal(noisy_copies(images, 401, 0.1, seed=3), copies.reshape(-1, 8, 8, 1))
    second = noisy_copies(images[1:], 401, 0.1, seed=3, first=1).reshape(401, 1, 8, 8, 1)  # chunking: same noise
    np.testing.assert_array_equal(second[:, 0], copies[:, 1])


def test_the_registry_says_what_each_test_is():
    spec = sanity_tests.get("smooth_mprt")
    assert (spec.family, spec.cumulative, spec.judged, spec.smoothing) == ("model_randomization", True,
                                                                           "last_stage", True)
    assert [n for n, t in sanity_tests.TESTS.items() if t.smoothing] == ["smooth_mprt"]


def test_without_noise_smooth_mprt_is_bottom_up_cascading_and_with_noise_it_differs(sanity, tmp_path):
    tables = {}
    for name, args in (("cascading", ("test=cascading", "test.order=bottom_up")),
                       ("quiet", ("test=smooth_mprt", "test.samples=3", "test.noise_magnitude=0")),
                       ("noisy", ("test=smooth_mprt", "test.samples=3"))):
        result = sanity("run", *RUN, *args, f"hydra.run.dir={name}")
        assert result.returncode == 0, result.stderr[-2000:]
        tables[name] = pd.read_csv(tmp_path / name / "metrics.csv")
    assert tables["quiet"].drop_duplicates("stage")["block"].tolist() == ["trained", "conv1", "conv2", "fc1",
                                                                          "logits"]
    np.testing.assert_allclose(tables["quiet"]["value"], tables["cascading"]["value"], atol=1e-6)
    model_rows = tables["noisy"]["method"] != "sobel"
    assert not np.allclose(tables["noisy"].loc[model_rows, "value"], tables["cascading"].loc[model_rows, "value"])
    np.testing.assert_array_equal(tables["noisy"].loc[~model_rows, "value"],
                                  tables["cascading"].loc[~model_rows, "value"])  # controls are not smoothed
