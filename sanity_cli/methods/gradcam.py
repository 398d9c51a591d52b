"""Grad-CAM and Guided Grad-CAM (Selvaraju et al. 2017)."""

from __future__ import annotations

import numpy as np

from ..errors import SanityError
from ..params import Choice
from .declared import LAYER, OUTPUT
from .engine import engine_for
from .registry import register

# bilinear: half-pixel centres (tf.image.resize); legacy: TF1's resize_bilinear, as PAIR 0.0.x and the notebooks
UPSAMPLING = Choice("bilinear", ("bilinear", "legacy"))
PARAMS = {"layer": LAYER, "output": OUTPUT, "upsampling": UPSAMPLING}


def _layer(layer):
    if not layer:
        raise SanityError("gradcam: no layer given and the model declares no default conv layer; "
                          "set method.gradcam.layer=NAME")
    return layer


def _to_image_shape(cam: np.ndarray, images: np.ndarray) -> np.ndarray:
    return np.broadcast_to(cam[..., None], images.shape).astype(np.float32)


@register("gradcam", params=PARAMS, needs_conv_layer=True)
def gradcam(model, images, targets, *, layer: str | None, output: str, upsampling: str, options,
            seed=0) -> np.ndarray:
    """L = ReLU(sum_k alpha_k A^k), alpha_k = mean_ij d f_c / d A^k_ij, bilinearly upsampled; same on every channel."""
    cam = engine_for(model, options).gradcam(images, targets, _layer(layer), output=output, upsampling=upsampling)
    return _to_image_shape(cam, np.asarray(images))


@register("guided_gradcam", params=PARAMS, needs_conv_layer=True, uses_guided_relu=True)
def guided_gradcam(model, images, targets, *, layer: str | None, output: str, upsampling: str, options,
                   seed=0) -> np.ndarray:
    """Guided backprop ⊙ upsampled Grad-CAM."""
    engine = engine_for(model, options)
    cam = engine.gradcam(images, targets, _layer(layer), output=output, upsampling=upsampling)
    guided = engine.gradients(images, targets, output=output, relu_rule="guided")
    return (guided * cam[..., None]).astype(np.float32)
