"""Your own Keras model (`model=keras model.path=FILE`): loading, the explained output, randomization blocks,
the Grad-CAM layer and fresh copies to train. The TensorFlow half of architectures.KerasFile."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from .errors import SanityError, one_line
from .randomize import Block, leaf_layers

log = logging.getLogger("sanity").info


def load(path: str, output: str = "logits"):
    """The model in `path`, explaining pre-softmax logits unless output='probabilities': a final softmax (the last
    layer's activation, or a Softmax/Activation('softmax') layer) is stripped, and the log says so."""
    import keras

    file = Path(path)
    if file.is_dir():  # Keras 3 loads a SavedModel only as an opaque TFSMLayer: no layers to randomize
        raise SanityError(f"model.path {file} is a SavedModel folder, which Keras 3 loads only as an opaque layer "
                          f"without its layers; save the model as .keras (model.save('model.keras'))")
    _check_format(file)
    try:
        model = keras.models.load_model(file, compile=False)
    except Exception as err:  # not a Keras file, a corrupt one, an unknown custom layer...
        raise SanityError(f"model.path {file} is not a Keras model Keras can load "
                          f"({one_line(err, first_line=True, limit=200)}); save it with "
                          f"model.save('model.keras')") from None
    if not isinstance(model, keras.Model):
        raise SanityError(f"model.path {file} holds a {type(model).__name__}, not a Keras model")
    check_image_classifier(model, file.name)
    if output == "logits":
        model = strip_softmax(model)
    return model


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_format(file: Path) -> None:
    """A .keras file is a zip archive and an .h5 file an HDF5 one (Keras says "File not found" for anything else)."""
    import zipfile

    if not file.is_file():
        raise SanityError(f"model.path {file} does not exist; give the .keras or .h5 file")
    with open(file, "rb") as handle:
        head = handle.read(8)
    if file.suffix == ".keras" and not zipfile.is_zipfile(file):
        raise SanityError(f"model.path {file} is not a Keras model Keras can load (not a zip archive, which a .keras "
                          f"file is); save the model with model.save('model.keras')")
    if file.suffix in (".h5", ".hdf5") and head != HDF5_SIGNATURE:
        raise SanityError(f"model.path {file} is not a Keras model Keras can load (not an HDF5 file, which an .h5 "
                          f"file is); save the model with model.save('model.keras')")


def live_copy(model, output: str = "logits"):
    """(a copy of a live model with its weights, the sha256 of its architecture and weights): check() explains
    the copy, so the caller's model is never randomized; the digest keys the data test's trained copies."""
    import hashlib

    import keras

    if not isinstance(model, keras.Model):
        raise SanityError(f"check() needs a Keras model, got {type(model).__name__}")
    check_image_classifier(model, model.name)
    copy = keras.models.clone_model(model)
    copy.build(model.input_shape)
    copy.set_weights(model.get_weights())
    digest = hashlib.sha256(model.to_json().encode())
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return (strip_softmax(copy) if output == "logits" else copy), digest.hexdigest()


def check_image_classifier(model, label: str) -> None:
    """One image input (batch, height, width, channels) and one output (batch, classes)."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise SanityError(f"{label}: sanity explains models with one input and one output; this one has "
                          f"{len(model.inputs)} inputs and {len(model.outputs)} outputs")
    shape = tuple(model.input_shape)
    if len(shape) != 4:
        raise SanityError(f"{label}: the model's input has shape {shape}, not an image (batch, height, width, "
                          f"channels); saliency maps need image models")
    if len(model.output_shape) != 2:
        raise SanityError(f"{label}: the model's output has shape {tuple(model.output_shape)}; sanity explains "
                          f"classifiers with one output per class (batch, classes)")


def strip_softmax(model):
    """The same model without its final softmax, so that the pre-softmax logit is explained (paper Sec. 2)."""
    import keras

    last = model.layers[-1]
    while isinstance(last, keras.Model) and last.layers:  # a nested model's own last layer (a Sequential head)
        last = last.layers[-1]
    activation = getattr(last, "activation", None)
    softmax_layer = isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and getattr(activation, "__name__", "") == "softmax")
    if softmax_layer and last is not model.layers[-1]:
        raise SanityError(f"{model.name} ends in a softmax layer '{last.name}' inside a nested model, which sanity "
                          f"cannot leave out; explain probabilities with model.output=probabilities, or save the "
                          f"model without it")
    if softmax_layer:
        stripped = keras.Model(model.inputs, last.input, name=model.name)
        log(f"model: explaining the pre-softmax logits: the final layer '{last.name}' (softmax) is left out "
            f"(model.output=probabilities keeps it)")
        return stripped
    if getattr(activation, "__name__", "") == "softmax":
        object.__setattr__(last, "activation", keras.activations.linear)
        log(f"model: explaining the pre-softmax logits: the softmax activation of the final layer '{last.name}' is "
            f"replaced by the identity (model.output=probabilities keeps it)")
    return model


def blocks(model, spec: dict | None = None) -> list[Block]:
    """Randomization blocks, output first: every layer with variables alone, or the user's grouping {name:
    [layer name or regex, ...]} (a regex matches whole layer names). Every layer with variables must be in
    exactly one block."""
    owners = [layer.name for layer in leaf_layers(model) if layer.weights]
    repeated = sorted({name for name in owners if owners.count(name) > 1})
    if repeated:
        raise SanityError(f"{model.name} has several layers called {', '.join(repeated)} (in nested models); "
                          f"rename them (keras layers' name=...) so that each block names one layer")
    if not owners:
        raise SanityError(f"{model.name} has no layer with variables to randomize")
    if not spec:
        return [Block(name, (name,)) for name in reversed(owners)]
    chosen: dict[str, list[str]] = {}
    for block, patterns in spec.items():
        members = []
        for pattern in patterns:
            try:
                matched = [name for name in owners if name == pattern or re.fullmatch(pattern, name)]
            except re.error as err:
                raise SanityError(f"model.blocks.{block}: '{pattern}' is not a valid regex ({err})") from None
            if not matched:
                raise SanityError(f"model.blocks.{block}: '{pattern}' matches no layer with variables of "
                                  f"{model.name}; layers with variables: {', '.join(owners)}")
            members += [name for name in matched if name not in members]
        chosen[block] = members
    counts = {name: sum(name in members for members in chosen.values()) for name in owners}
    twice = [name for name, count in counts.items() if count > 1]
    if twice:
        raise SanityError(f"model.blocks: layer(s) {', '.join(twice)} are in more than one block; put each in one")
    strays = [name for name, count in counts.items() if count == 0]
    if strays:
        raise SanityError(f"model.blocks leaves out layer(s) with variables: {', '.join(strays)}; add them to a "
                          f"block")
    order = {name: k for k, name in enumerate(owners)}
    ordered = sorted(chosen.items(), key=lambda item: max(order[n] for n in item[1]), reverse=True)
    return [Block(name, tuple(sorted(members, key=order.get))) for name, members in ordered]


def fresh_copy(model, seed: int):
    """The same architecture with new weights from each layer's own initializers (seeded): what the data
    randomization test trains on true and on permuted labels."""
    import keras

    keras.utils.set_random_seed(seed)
    copy = keras.models.clone_model(model)
    copy.build(model.input_shape)
    frozen = [layer.name for layer in leaf_layers(copy) if layer.weights and not layer.trainable]
    if frozen:  # a frozen random base would stay random: the copies learn every layer
        copy.trainable = True
        for layer in leaf_layers(copy):
            layer.trainable = True
        log(f"model: the trained copies learn every layer, also those frozen in the file ({', '.join(frozen[:5])}"
            f"{', ...' if len(frozen) > 5 else ''})")
    return copy


def check_fits(model, dataset, label: str = "the data") -> None:
    """The data's images have the model's input shape and its labels are among the model's classes."""
    expected = tuple(model.input_shape[1:])
    shape = tuple(dataset.x_test.shape[1:])
    if len(shape) != len(expected) or any(e is not None and e != d for e, d in zip(expected, shape)):
        raise SanityError(f"{label} has images of shape {shape} but the model expects {expected}; resize the data "
                          f"(data.size for folders) or give the matching model")
    classes = int(model.output_shape[-1])
    largest = max(int(dataset.y_test.max(initial=0)), int(dataset.y_train.max(initial=0)) if len(dataset.y_train)
                  else 0)
    if largest >= classes:
        raise SanityError(f"{label} has label {largest} but the model has {classes} classes (0..{classes - 1})")
