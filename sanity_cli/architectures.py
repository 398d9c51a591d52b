"""The architecture registry: every model family sanity knows, keyed by its config name (`model=NAME`).

Each entry says how to build the Keras model, its randomization blocks (paper Sec. 3.1: output first), its
input range (what "black" is, how images in [0, 1] are mapped in), its default Grad-CAM layer, which data it
explains, and whether sanity trains it (the data randomization test needs a model sanity can retrain). No other
module recognises a model by its name. Builders are named as "module:function" and imported only when called,
so the registry is TensorFlow-free (the CLI validates against it before importing TensorFlow).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .errors import SanityError

DATA_KINDS = {"digits": ("mnist", "fashion_mnist"), "photos": ("images",)}


def _resolve(target: str):
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


@dataclass(frozen=True)
class Architecture:
    name: str
    data: str                        # a key of DATA_KINDS
    input_range: tuple[float, float]  # the model's input for a black and for a white pixel
    gradcam_layer: str | None        # default Grad-CAM layer (the last conv layer); None: no conv layer
    trained_by_sanity: bool          # False: pretrained weights (no data randomization test)
    builder: str                     # "module:function" returning the Keras model (keyword arguments: the config's)
    block_lister: str                # "module:function" model -> list[Block], output first
    image_size: int                  # height = width of its input images

    def build(self, **kwargs):
        return _resolve(self.builder)(**kwargs)

    def blocks(self, model) -> list:
        return _resolve(self.block_lister)(model)

    @property
    def black(self) -> float:
        return float(self.input_range[0])

    def to_model_space(self, images):
        """Images in [0, 1] -> the model's input range."""
        import numpy as np

        low, high = self.input_range
        return (low + (high - low) * np.asarray(images, np.float32)).astype(np.float32)

    def check_data(self, data_name: str) -> None:
        if data_name not in DATA_KINDS[self.data]:
            choices = " or ".join(f"data={d}" for d in DATA_KINDS[self.data])
            raise SanityError(f"model={self.name} cannot explain data={data_name}; use {choices}")


ARCHITECTURES = {arch.name: arch for arch in (
    # the released code's CNN (conv-pool, conv-pool, fc1024, logits) and MLP (fc2500, fc1500, fc500, logits)
    Architecture("mnist_cnn", "digits", (0.0, 1.0), "conv2", True, "sanity_cli.models:mnist_cnn",
                 "sanity_cli.models:layer_blocks", 28),
    Architecture("mnist_mlp", "digits", (0.0, 1.0), None, True, "sanity_cli.models:mnist_mlp",
                 "sanity_cli.models:layer_blocks", 28),
    # Keras InceptionV3 with ImageNet weights, Inception preprocessing x / 127.5 - 1, the paper's 17 blocks
    Architecture("inception", "photos", (-1.0, 1.0), "mixed10", False, "sanity_cli.inception:build",
                 "sanity_cli.inception:blocks", 299),
)}


def get(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise SanityError(f"unknown model '{name}'; choose from {', '.join(sorted(ARCHITECTURES))} (model=NAME)")
    return ARCHITECTURES[name]
