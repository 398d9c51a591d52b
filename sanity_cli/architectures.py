"""The architecture registry: every model family sanity knows, keyed by its config name (`model=NAME`).

Each entry says how to build the Keras model, its randomization blocks (paper Sec. 3.1: output first), its
input range (what "black" is, how images in [0, 1] are mapped in), its default Grad-CAM layer, which data it
explains, and whether sanity trains it (the data randomization test needs a model sanity can retrain). No other
module recognises a model by its name. Builders are named as "module:function" and imported only when called,
so the registry is TensorFlow-free (the CLI validates against it before importing TensorFlow).

`model=keras` is the user's own Keras file: `for_config(cfg.model)` gives its `KerasFile` entry, which answers
the same questions from the file and the config (sanity_cli/user_model.py does the TensorFlow part).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

from .errors import SanityError

DATA_KINDS = {"digits": ("mnist", "fashion_mnist"), "photos": ("images",)}
# keras.applications' input conventions for images in [0, 1] (per channel where the convention is):
# x -> low + (high - low) * x, after reversing the channels (RGB -> BGR) for caffe
PREPROCESS = {
    "none": None,                                   # model.input_range, default [0, 1]
    "inception": ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)),   # x / 127.5 - 1
    "torch": (tuple(-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))),
              tuple((1 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))),
    "caffe": ((-103.939, -116.779, -123.68), (255 - 103.939, 255 - 116.779, 255 - 123.68)),  # BGR, minus means
}


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
    penalised: tuple[str, ...] = ()  # layers whose kernels train.l2 penalises (the released CNN's --reg: conv1,
                                     # conv2, fc1; never biases or the logits kernel)

    def build(self, **kwargs):
        return _resolve(self.builder)(**kwargs)

    def build_untrained(self, seed: int):
        """A fresh model to train (seeded by the caller)."""
        return self.build()

    def blocks(self, model) -> list:
        return _resolve(self.block_lister)(model)

    def default_gradcam_layer(self, model) -> str | None:
        return self.gradcam_layer

    def penalised_layer_names(self, model) -> list[str]:
        return list(self.penalised)

    def penalised_kernels(self, model) -> list:
        """The kernel variables train.l2 penalises."""
        from .randomize import find_layer

        return [find_layer(model, name).kernel for name in self.penalised_layer_names(model)]

    outputs_logits = True  # the model's outputs are pre-softmax logits (training uses from_logits)

    @property
    def identity(self) -> dict:
        """What, besides the training settings and data, determines a trained model (model-cache key)."""
        return {"arch": self.name}

    @property
    def black(self) -> float:
        return float(self.input_range[0])

    reverse_channels = False

    def to_model_space(self, images):
        """Images in [0, 1] -> the model's input range (per channel when the range is per channel)."""
        import numpy as np

        images = np.asarray(images, np.float32)
        if self.reverse_channels:
            images = images[..., ::-1]
        low, high = (np.asarray(v, np.float32) for v in self.input_range)
        return (low + (high - low) * images).astype(np.float32)

    def input_shape(self) -> tuple:
        return (self.image_size, self.image_size, 1 if self.data == "digits" else 3)

    def check_data(self, data_name: str) -> None:
        if data_name not in DATA_KINDS[self.data]:
            choices = " or ".join(f"data={d}" for d in DATA_KINDS[self.data])
            raise SanityError(f"model={self.name} cannot explain data={data_name}; use {choices}")


ARCHITECTURES = {arch.name: arch for arch in (
    # the released code's CNN (conv-pool, conv-pool, fc1024, logits) and MLP (fc2500, fc1500, fc500, logits)
    Architecture("mnist_cnn", "digits", (0.0, 1.0), "conv2", True, "sanity_cli.models:mnist_cnn",
                 "sanity_cli.models:layer_blocks", 28, penalised=("conv1", "conv2", "fc1")),
    Architecture("mnist_mlp", "digits", (0.0, 1.0), None, True, "sanity_cli.models:mnist_mlp",
                 "sanity_cli.models:layer_blocks", 28, penalised=("fc1", "fc2", "fc3")),
    # Keras InceptionV3 with ImageNet weights, Inception preprocessing x / 127.5 - 1, the paper's 17 blocks
    Architecture("inception", "photos", (-1.0, 1.0), "mixed10", False, "sanity_cli.inception:build",
                 "sanity_cli.inception:blocks", 299),
)}


@dataclass(frozen=True)
class KerasFile(Architecture):
    """`model=keras model.path=FILE`: the user's Keras 3 image classifier (.keras or .h5; a SavedModel folder is
    refused: Keras 3 loads it only as an opaque layer).
    Blocks: `model.blocks` ({name: [layer names or regexes]}) or every layer with variables, output first;
    Grad-CAM: `model.gradcam_layer` or the last layer with a 4-D output; trained copies for the data test are
    re-initialised with the model's own initializers."""

    path: str = ""
    output: str = "logits"
    block_spec: tuple = ()           # ((name, (pattern, ...)), ...)
    file_digest: str = ""
    preprocess: str = "none"

    @property
    def outputs_logits(self) -> bool:
        return self.output == "logits"

    @property
    def reverse_channels(self) -> bool:  # caffe: RGB -> BGR
        return self.preprocess == "caffe"

    def check_data(self, data_name: str) -> None:
        """Your model takes any images: their shape is checked against its input once both are loaded."""

    def input_shape(self) -> tuple:
        """(height, width, channels) of the model's input."""
        return tuple(self.build().input_shape[1:])

    def build(self, **kwargs):
        from .user_model import load

        return load(self.path, self.output)

    def build_untrained(self, seed: int):
        from .user_model import fresh_copy

        return fresh_copy(self.build(), seed)

    def blocks(self, model) -> list:
        from .user_model import blocks

        return blocks(model, dict(self.block_spec) or None)

    def penalised_layer_names(self, model) -> list[str]:
        """Every layer with a kernel but the last one (the output layer), as the released CNN's penalty."""
        from .randomize import leaf_layers

        return [layer.name for layer in leaf_layers(model) if getattr(layer, "kernel", None) is not None][:-1]

    def default_gradcam_layer(self, model) -> str | None:
        """The last layer with a 4-D output."""
        from .methods.engine import conv_layer_names

        names = conv_layer_names(model)
        return names[-1] if names else None

    @property
    def identity(self) -> dict:
        return {"arch": "keras", "file_sha256": self.file_digest, "output": self.output,
                "input_range": [list(v) if isinstance(v, (list, tuple)) else v for v in self.input_range],
                "preprocess": self.preprocess}


def for_config(model_cfg) -> Architecture:
    """The architecture a `model` config node describes: a registry entry, or the user's Keras file (model=keras)."""
    if model_cfg.name != "keras":
        return get(model_cfg.name)
    from pathlib import Path

    path = model_cfg.get("path")
    if not path:
        raise SanityError("model=keras needs the model file: model.path=FILE (.keras or .h5)")
    file = Path(str(path)).expanduser()
    if not file.exists():
        raise SanityError(f"model.path {file} does not exist; give the .keras or .h5 file")
    if file.is_dir():  # Keras 3 loads a SavedModel only as an opaque TFSMLayer: no layers to randomize
        raise SanityError(f"model.path {file} is a folder (a SavedModel?), which Keras 3 loads only as an opaque "
                          f"layer without its layers; save the model as .keras (model.save('model.keras'))")
    preprocess = model_cfg.get("preprocess") or "none"
    if preprocess not in PREPROCESS:
        raise SanityError(f"model.preprocess must be one of {', '.join(PREPROCESS)}, got {preprocess!r}")
    if PREPROCESS[preprocess] is not None:
        if model_cfg.get("input_range") is not None:
            raise SanityError("give model.input_range or model.preprocess, not both")
        input_range = PREPROCESS[preprocess]
    else:
        input_range = model_cfg.get("input_range") or [0.0, 1.0]
        try:
            low, high = (float(v) for v in input_range)
        except (TypeError, ValueError):
            raise SanityError(f"model.input_range must be [low, high] (the model's input for a black and a white "
                              f"pixel), got {input_range!r}") from None
        if not high > low:
            raise SanityError(f"model.input_range must have low < high, got {[low, high]}")
        input_range = (low, high)
    output = model_cfg.get("output") or "logits"
    if output not in ("logits", "probabilities"):
        raise SanityError(f"model.output must be logits or probabilities, got {output!r}")
    spec = model_cfg.get("blocks")
    if spec is not None:
        from omegaconf import DictConfig, OmegaConf

        spec = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else spec
        if not isinstance(spec, dict) or not spec or not all(
                isinstance(v, list) and v and all(isinstance(p, str) for p in v) for v in spec.values()):
            raise SanityError("model.blocks must map each block name to a list of layer names or regexes, e.g. "
                              "model.blocks={head: [dense], body: ['conv.*']}")
    return KerasFile("keras", "any", input_range, None, True, "", "", 0, path=str(file), output=output,
                     block_spec=tuple((k, tuple(v)) for k, v in (spec or {}).items()),
                     file_digest=_digest(file), preprocess=preprocess)


def _digest(path) -> str:
    """sha256 of a model file, or of every file of a SavedModel folder (names and contents); computed once per
    file version (path, size, modification time) in a process."""
    import os

    stat = os.stat(path)
    return _digest_of(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _digest_of(path: str, size: int, mtime: int) -> str:
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
    for file in files:
        h.update(str(file.relative_to(path) if Path(path).is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def get(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise SanityError(f"unknown model '{name}'; choose from {', '.join(sorted(ARCHITECTURES))} (model=NAME), or "
                          f"model=keras model.path=FILE for your own")
    return ARCHITECTURES[name]
