"""Input invariance (Kindermans et al., "The (Un)reliability of saliency methods", 2019).

Shift every input by a constant c and give the model a first-layer bias that absorbs the shift,
b' = b - W c (for a dense layer on the flattened image: b'_j = b_j - c sum_i W_ij; for a convolution without
zero padding at the border: b'_k = b_k - c sum W[..., k]), so that f'(x + c) = f(x) for every x. The model and
its outputs are the same; an explanation that changes anyway depends on something other than the model's
function. Known results: Gradient, SmoothGrad, Guided Backprop and Grad-CAM are invariant; Gradient x Input and
Integrated Gradients with a zero baseline are not; IG with a black baseline that moves with the shift is.
"""

from __future__ import annotations

import numpy as np

from .errors import SanityError

LOGIT_TOLERANCE = 1e-4  # the shifted model must give the same logits on the shifted images, within this


def shift_compensated(model, shift: float):
    """A copy of `model` whose first layer with weights absorbs an input shift c in its bias: f'(x + c) = f(x)
    (exact for a Dense layer on the flattened image; a convolution is exact only where it sees no padding,
    which run-time checks of the logits catch)."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    first = next(layer for layer in clone.layers if layer.weights)
    if not isinstance(first, (keras.layers.Dense, keras.layers.Conv2D)) or not first.use_bias:
        raise SanityError(f"test=input_invariance needs a first layer with a bias to absorb the shift; "
                          f"{model.name}'s first layer {first.name} is a {type(first).__name__}"
                          f"{'' if getattr(first, 'use_bias', True) else ' without bias'}; use model=mnist_mlp")
    kernel = np.asarray(first.kernel.numpy(), np.float64)
    absorbed = shift * kernel.sum(axis=tuple(range(kernel.ndim - 1)))
    first.bias.assign((np.asarray(first.bias.numpy(), np.float64) - absorbed).astype(np.float32))
    return clone


def check_same_function(original_logits: np.ndarray, shifted_logits: np.ndarray, model_name: str) -> float:
    """The largest logit change; one clear error line when the shift was not absorbed exactly."""
    change = float(np.max(np.abs(np.asarray(shifted_logits, np.float64) - original_logits)))
    if not change <= LOGIT_TOLERANCE:
        raise SanityError(f"test=input_invariance: {model_name} cannot absorb the input shift exactly (its logits "
                          f"changed by up to {change:.3g} > {LOGIT_TOLERANCE}; a first convolution that pads the "
                          f"image with zeros sees the shift at the border); use model=mnist_mlp")
    return change


def max_relative_difference(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per image: max |other - reference| / max |reference| (0 when both are all zero, inf when only the
    reference is)."""
    n = len(reference)
    ref = np.asarray(reference, np.float64).reshape(n, -1)
    diff = np.abs(np.asarray(other, np.float64).reshape(n, -1) - ref).max(axis=1)
    scale = np.abs(ref).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), np.where(diff > 0, np.inf, 0.0))
