"""The architecture registry: every model family sanity knows, keyed by its config name (`model=NAME`).

Each entry says how to build the Keras model, its randomization blocks (paper Sec. 3.1: output first), its
input range (what "black" is, how images in [0, 1] are mapped in), its default Grad-CAM layer, which data it
explains, whether sanity trains it (the data randomization test needs a model sanity can retrain), the
parameters of its config node (`model.*`, each with its rule and default) and how the model of a run is obtained
(`trained_model`: pretrained weights, the model cache, or your file). No other module recognises a model by its
name. Builders are named as "module:function" and imported only when called, so the registry is TensorFlow-free
(the specs are parsed before TensorFlow is imported).

`model=keras` is the user's own Keras file (`KerasFile`), and `check(model, ...)` a live Keras model
(`LiveModel`): they answer the same questions from the model itself (sanity_cli/user_model.py does the
TensorFlow part).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .errors import SanityError
from .params import Anything, Choice, Int, Param, PathValue, Text
from .trained import TrainedModel

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
GRADCAM_LAYER = Text(None, nullable=True)  # null: the architecture's default conv layer


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
    released_l2: float = 0.0         # train.l2 when the config leaves it null: the released recipe's penalty
    params: Mapping[str, Param] = field(default_factory=lambda: {"gradcam_layer": GRADCAM_LAYER})
    values: Mapping = field(default_factory=dict, compare=False)  # the config's model.* values (with_values)

    def with_values(self, values: Mapping) -> "Architecture":
        """This entry with the parsed values of its config node (model.weights, model.gradcam_layer, ...)."""
        from dataclasses import replace

        return replace(self, values=dict(values))

    def build(self, **kwargs):
        return _resolve(self.builder)(**kwargs)

    def build_untrained(self, seed: int):
        """A fresh model to train (seeded by the caller)."""
        return self.build()

    def blocks(self, model) -> list:
        return _resolve(self.block_lister)(model)

    def default_gradcam_layer(self, model) -> str | None:
        return self.values.get("gradcam_layer") or self.gradcam_layer

    def penalised_layer_names(self, model) -> list[str]:
        return list(self.penalised)

    def penalised_kernels(self, model) -> list:
        """The kernel variables train.l2 penalises."""
        from .randomize import find_layer

        return [find_layer(model, name).kernel for name in self.penalised_layer_names(model)]

    def trained_model(self, dataset, labels: str, seed: int, settings, cache, log, copies: bool = False):
        """The run's model (a TrainedModel): from the model cache (`cache`: training.load_or_train with the cache
        directory bound; it trains a missing one), or its pretrained weights. `copies`: the test trains models of
        this architecture (the data test)."""
        if self.trained_by_sanity:
            return cache(self, dataset, labels, seed, settings, log=log)
        if labels != "true":
            raise SanityError(f"the data randomization test needs a model sanity trains itself; model={self.name} "
                              f"comes pretrained (use model=mnist_cnn or model=mnist_mlp with test=data)")
        weights = self.values.get("weights")
        model = self.build(weights=weights)
        log(f"model: {self.name} with weights={weights}")
        return TrainedModel(model, f"{model.name}-{weights}", "true",
                                     {"weights": str(weights), "cache": "keras"})

    outputs_logits = True  # the model's outputs are pre-softmax logits (training uses from_logits)
    guided_is_gradient = False  # Guided Backprop equals Gradient by construction (no self-check of the guided swap)

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

    def check_data(self, data_name: str, values: Mapping | None = None) -> None:
        """This architecture explains this data (photos go with Inception, digits with the MNIST models), at its
        input size."""
        if data_name not in DATA_KINDS[self.data]:
            choices = " or ".join(f"data={d}" for d in DATA_KINDS[self.data])
            raise SanityError(f"model={self.name} cannot explain data={data_name}; use {choices}")
        size = (values or {}).get("size", self.image_size)
        if self.data == "photos" and size != self.image_size:
            raise SanityError(f"data.size must be {self.image_size} for model={self.name}, got {size!r}")

    def check_fits(self, model, dataset, label: str) -> None:
        """The data fits the model (your own models: checked once both are loaded; built-ins by construction)."""


WEIGHTS = ("random", "trained")


@dataclass(frozen=True)
class DataShaped(Architecture):
    """Paper Sec. 5's models (model=linear, model=conv_sumpool): they take any images, their input shape (28x28x1
    digits, size x size x 3 photos) set from the data set when the run starts (`trained_model`). model.weights:
    `random` (default): a fresh model seeded by the run's seed, never trained; `trained`: trained on the data's
    labels through the model cache like mnist_cnn (train.*), keyed by the architecture, its input shape and its
    number of outputs (`outputs_param`: model.classes or model.filters)."""

    outputs_param: str = "classes"
    shape: tuple = ()                # (height, width, channels), set from the data
    guided_is_gradient: bool = False  # one ReLU whose upstream gradient is positive: Guided Backprop = Gradient

    def with_values(self, values: Mapping) -> "DataShaped":
        from dataclasses import replace

        return replace(self, values=dict(values), trained_by_sanity=values["weights"] == "trained")

    @property
    def outputs(self) -> int:
        return int(self.values.get(self.outputs_param, 10))

    def input_shape(self) -> tuple:
        """The data's shape once set; before (data=folder asks for it to load the pictures) image_size, RGB."""
        return self.shape or (self.image_size, self.image_size, 3)

    def check_data(self, data_name: str, values: Mapping | None = None) -> None:
        """Digits, photos or your own images: the model takes the data's shape."""

    def build(self, **kwargs):
        return _resolve(self.builder)(input_shape=self.input_shape(), seed=kwargs.get("seed", 0),
                                      **{self.outputs_param: self.outputs})

    def build_untrained(self, seed: int):
        return self.build(seed=seed)

    @property
    def identity(self) -> dict:
        return {"arch": self.name, "input_shape": list(self.shape), self.outputs_param: self.outputs}

    def trained_model(self, dataset, labels: str, seed: int, settings, cache, log, copies: bool = False):
        """model.weights=trained: the model cache (trained on `labels` when missing); random: a seeded fresh model
        (seeds.RANDOM_WEIGHTS stream of the run's seed)."""
        from dataclasses import replace

        from .seeds import RANDOM_WEIGHTS, derive_seed

        shaped = replace(self, shape=tuple(int(v) for v in dataset.x_test.shape[1:]))
        if self.trained_by_sanity:
            if not len(dataset.x_train):
                raise SanityError(f"model.weights=trained trains model={self.name} on the training split, and "
                                  f"data={dataset.name} has none; use model.weights=random or data=mnist")
            if int(dataset.y_train.max()) >= self.outputs:
                raise SanityError(f"model={self.name} has {self.outputs} outputs (model.{self.outputs_param}) but "
                                  f"data={dataset.name} has labels up to {int(dataset.y_train.max())}; set "
                                  f"model.{self.outputs_param}={int(dataset.y_train.max()) + 1}")
            return cache(shaped, dataset, labels, seed, settings, log=log)
        if labels != "true":
            raise SanityError(f"the data randomization test trains model={self.name} on permuted labels; "
                              f"model.weights=random is never trained: use model.weights=trained")
        model = shaped.build(seed=derive_seed(seed, RANDOM_WEIGHTS))
        log(f"model: {self.name} with random weights (seed {seed}), input {shaped.shape}, {self.outputs} outputs")
        key = f"{self.name}-random-{seed}-{'x'.join(map(str, shaped.shape))}-{self.outputs}"
        return TrainedModel(model, key, "true", {"weights": "random", "cache": "random"})


SEC5_PARAMS = {"weights": Choice("random", WEIGHTS)}


ARCHITECTURES = {arch.name: arch for arch in (
    # the released code's CNN (conv-pool, conv-pool, fc1024, logits) and MLP (fc2500, fc1500, fc500, logits)
    Architecture("mnist_cnn", "digits", (0.0, 1.0), "conv2", True, "sanity_cli.models:mnist_cnn",
                 "sanity_cli.models:layer_blocks", 28, penalised=("conv1", "conv2", "fc1"), released_l2=0.001,
                 params={"gradcam_layer": GRADCAM_LAYER}),
    # the released MLP script takes --reg but applies no penalty ("TO DO: put in regularization again")
    Architecture("mnist_mlp", "digits", (0.0, 1.0), None, True, "sanity_cli.models:mnist_mlp",
                 "sanity_cli.models:layer_blocks", 28, penalised=("fc1", "fc2", "fc3"), released_l2=0.0,
                 params={"gradcam_layer": GRADCAM_LAYER}),
    # Keras InceptionV3 with ImageNet weights, Inception preprocessing x / 127.5 - 1, the paper's 17 blocks
    Architecture("inception", "photos", (-1.0, 1.0), "mixed10", False, "sanity_cli.inception:build",
                 "sanity_cli.inception:blocks", 299,
                 params={"weights": Text("imagenet"), "gradcam_layer": GRADCAM_LAYER}),
    # paper Sec. 5: f(x) = w . x, and l(x) = sum_ij ReLU(w * x)_ij; any images (image_size: data=folder's size)
    DataShaped("linear", "any", (0.0, 1.0), None, False, "sanity_cli.models:linear", "sanity_cli.models:layer_blocks",
               224, params={**SEC5_PARAMS, "classes": Int(10, low=1)}),
    DataShaped("conv_sumpool", "any", (0.0, 1.0), "conv", False, "sanity_cli.models:conv_sumpool",
               "sanity_cli.models:layer_blocks", 224, params={**SEC5_PARAMS, "filters": Int(10, low=1),
                                                             "gradcam_layer": GRADCAM_LAYER},
               outputs_param="filters", guided_is_gradient=True),
)}


def _input_range(value, preprocess: str) -> tuple:
    if PREPROCESS[preprocess] is not None:
        if value is not None:
            raise SanityError("give model.input_range or model.preprocess, not both")
        return PREPROCESS[preprocess]
    try:
        low, high = (float(v) for v in (value if value is not None else (0.0, 1.0)))
    except (TypeError, ValueError):
        raise SanityError(f"model.input_range must be [low, high] (the model's input for a black and a white "
                          f"pixel), got {value!r}") from None
    if not high > low:
        raise SanityError(f"model.input_range must have low < high, got {[low, high]}")
    return (low, high)


def _block_spec(spec) -> tuple:
    if spec is None:
        return ()
    if not isinstance(spec, Mapping) or not spec or not all(
            isinstance(v, (list, tuple)) and v and all(isinstance(p, str) for p in v) for v in spec.values()):
        raise SanityError("model.blocks must map each block name to a list of layer names or regexes, e.g. "
                          "model.blocks={head: [dense], body: ['conv.*']}")
    return tuple((k, tuple(v)) for k, v in spec.items())


KERAS_PARAMS = {
    "path": PathValue(missing="model=keras needs the model file: model.path=FILE (.keras or .h5)"),
    "input_range": Anything(None), "preprocess": Choice("none", PREPROCESS), "blocks": Anything(None),
    "output": Choice("logits", ("logits", "probabilities")), "gradcam_layer": GRADCAM_LAYER,
    "train": Anything({}),   # optimizer, learning_rate, epochs, batch_size, l2, target_accuracy, max_epochs
}


@dataclass(frozen=True)
class KerasFile(Architecture):
    """`model=keras model.path=FILE`: the user's Keras 3 image classifier (.keras or .h5; a SavedModel folder is
    refused: Keras 3 loads it only as an opaque layer). Loaded once per run (`build` keeps it).
    Blocks: `model.blocks` ({name: [layer names or regexes]}) or every layer with variables, output first;
    Grad-CAM: `model.gradcam_layer` or the last layer with a 4-D output; trained copies for the data test are
    re-initialised with the model's own initializers."""

    path: str = ""
    output: str = "logits"
    block_spec: tuple = ()           # ((name, (pattern, ...)), ...)
    file_digest: str = ""
    preprocess: str = "none"
    loaded: dict = field(default_factory=dict, compare=False, repr=False)  # the model, once loaded

    @classmethod
    def from_values(cls, values: Mapping) -> "KerasFile":
        file = Path(values["path"]).expanduser()
        if not file.exists():
            raise SanityError(f"model.path {file} does not exist; give the .keras or .h5 file")
        if file.is_dir():  # Keras 3 loads a SavedModel only as an opaque TFSMLayer: no layers to randomize
            raise SanityError(f"model.path {file} is a folder (a SavedModel?), which Keras 3 loads only as an opaque "
                              f"layer without its layers; save the model as .keras (model.save('model.keras'))")
        return cls("keras", "any", _input_range(values["input_range"], values["preprocess"]), None, True, "", "", 0,
                   params=KERAS_PARAMS, values=dict(values), path=str(file), output=values["output"],
                   block_spec=_block_spec(values["blocks"]), file_digest=_digest(file),
                   preprocess=values["preprocess"])

    @property
    def outputs_logits(self) -> bool:
        return self.output == "logits"

    @property
    def reverse_channels(self) -> bool:  # caffe: RGB -> BGR
        return self.preprocess == "caffe"

    def check_data(self, data_name: str, values: Mapping | None = None) -> None:
        """Your model takes any images: their shape is checked against its input once both are loaded."""

    def input_shape(self) -> tuple:
        """(height, width, channels) of the model's input."""
        return tuple(self.build().input_shape[1:])

    def build(self, **kwargs):
        if "model" not in self.loaded:
            from .user_model import load

            self.loaded["model"] = load(self.path, self.output)
        return self.loaded["model"]

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
        """model.gradcam_layer, or the last layer with a 4-D output."""
        from .methods.engine import conv_layer_names

        names = conv_layer_names(model)
        return self.values.get("gradcam_layer") or (names[-1] if names else None)

    def check_fits(self, model, dataset, label: str) -> None:
        from .user_model import check_fits

        check_fits(model, dataset, label)

    def trained_model(self, dataset, labels: str, seed: int, settings, cache, log, copies: bool = False):
        """Your file's own weights, or (the data test: `copies`) fresh copies trained in the model cache."""
        model = self.build()
        self.check_fits(model, dataset, f"data={dataset.name}")
        if not copies:
            log(f"model: {self.path} ({model.name}, {model.count_params():,} parameters, input "
                f"{tuple(model.input_shape[1:])}, {model.output_shape[-1]} classes)")
            return TrainedModel(model, f"keras-{self.file_digest[:16]}", "true",
                                         {"file": self.path, "sha256": self.file_digest, "cache": "file"})
        if not len(dataset.x_train):
            raise SanityError(f"test=data trains copies of your model: data={dataset.name} needs training images "
                              f"(x_train, y_train in the .npz)")
        return cache(self, dataset, labels, seed, settings, log=log)

    @property
    def identity(self) -> dict:
        return {"arch": "keras", "file_sha256": self.file_digest, "output": self.output,
                "input_range": [list(v) if isinstance(v, (list, tuple)) else v for v in self.input_range],
                "preprocess": self.preprocess}


@dataclass(frozen=True)
class LiveModel(KerasFile):
    """`check(model, ...)`: a live Keras model, explained as a copy (the caller's model is never randomized), its
    identity (model-cache key of the data test's copies) the sha256 of its architecture and weights."""

    @classmethod
    def of(cls, model, values: Mapping) -> "LiveModel":
        from .user_model import live_copy

        copy, digest = live_copy(model, values["output"])
        return cls("keras", "any", _input_range(values["input_range"], values["preprocess"]), None, True, "", "", 0,
                   params=KERAS_PARAMS, values=dict(values), path=f"<{model.name}>", output=values["output"],
                   block_spec=_block_spec(values["blocks"]), file_digest=digest, preprocess=values["preprocess"],
                   loaded={"model": copy})


def from_values(name: str, values: Mapping) -> Architecture:
    """The architecture a parsed `model` config node describes: a registry entry, or your Keras file."""
    if name == "keras":
        return KerasFile.from_values(values)
    return get(name).with_values(values)


def declared(name: str) -> Mapping[str, Param]:
    return KERAS_PARAMS if name == "keras" else get(name).params


def _digest(path) -> str:
    """sha256 of a model file, or of every file of a SavedModel folder (names and contents); computed once per
    file version (path, size, modification time) in a process."""
    import os

    stat = os.stat(path)
    return _digest_of(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _digest_of(path: str, size: int, mtime: int) -> str:
    import hashlib

    from .io import sha256_file

    if not Path(path).is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(f"{file.relative_to(path)}:{sha256_file(file)}\n".encode())
    return h.hexdigest()


def get(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise SanityError(f"unknown model '{name}'; choose from {', '.join(sorted(ARCHITECTURES))} (model=NAME), or "
                          f"model=keras model.path=FILE for your own")
    return ARCHITECTURES[name]
