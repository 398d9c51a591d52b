"""Input invariance (Kindermans et al. 2019): the shifted model computes the same function, and the known results
hold on a real (smoke-trained) MNIST MLP: Gradient, SmoothGrad and Guided Backprop are invariant; Gradient x Input
and Integrated Gradients with a zero baseline are not; IG with a black baseline that moves with the shift is."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sanity_cli.errors import SanityError
from sanity_cli.invariance import check_same_function, max_relative_difference, shift_compensated

from test_cli import assert_one_line_error

METHODS = "method=[gradient,gradient_x_input,integrated_gradients,smoothgrad_gradient,guided_backprop,sobel]"


def test_the_shift_is_absorbed_exactly_by_a_dense_first_layer():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 1))
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    x = np.random.default_rng(0).uniform(size=(5, 4, 4, 1)).astype(np.float32)
    shifted = shift_compensated(model, -1.0)
    np.testing.assert_allclose(shifted.predict(x - 1.0, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert not np.allclose(model.predict(x - 1.0, verbose=0), model.predict(x, verbose=0))  # without the bias
    np.testing.assert_array_equal(model.layers[2].get_weights()[1], np.zeros(8))  # the original is untouched


def test_max_relative_difference_by_hand():
    reference = np.array([[[1.0, -2.0]], [[0.0, 0.0]], [[0.0, 0.0]]])
    other = np.array([[[1.5, -2.0]], [[0.0, 0.0]], [[0.0, 0.1]]])
    np.testing.assert_array_equal(max_relative_difference(reference, other), [0.25, 0.0, np.inf])
    with pytest.raises(SanityError, match="cannot absorb"):
        check_same_function(np.zeros((2, 3)), np.full((2, 3), 0.01), "mnist_cnn")


def test_known_results_on_the_mnist_mlp(sanity, tmp_path):
    verdicts = {}
    for baseline in ("black", "zeros"):
        result = sanity("run", "model=mnist_mlp", "test=input_invariance", METHODS, "n_images=4",
                        f"method.integrated_gradients.baseline={baseline}", f"hydra.run.dir={baseline}")
        assert result.returncode == 0, result.stderr[-3000:]
        verdicts[baseline] = pd.read_csv(tmp_path / baseline / "verdict.csv").set_index("method")["verdict"]
    expected = {"gradient": "PASS", "smoothgrad_gradient": "PASS", "guided_backprop": "PASS",
                "gradient_x_input": "FAIL", "sobel": "reference"}
    for baseline in ("black", "zeros"):
        assert {m: verdicts[baseline][m] for m in expected} == expected
    assert verdicts["black"]["integrated_gradients"] == "PASS"   # the black baseline moves with the shift
    assert verdicts["zeros"]["integrated_gradients"] == "FAIL"
    page = (tmp_path / "black" / "report.html").read_text()
    assert "maps unchanged by the input shift" in page


def test_a_model_that_cannot_absorb_the_shift_is_one_line(sanity, tmp_path):
    result = sanity("run", "test=input_invariance", "method=[gradient]", "n_images=2")
    assert_one_line_error(result, "cannot absorb the input shift exactly", "model=mnist_mlp")
    assert not (tmp_path / "results").exists()
