"""Inception v3 (Keras applications) with ImageNet weights and the paper's 17 cascading blocks.

Paper Sec. 3.1 / Fig. 2: blocks from the top: logits, mixed_7c ... mixed_5b, conv2d_4a_3x3 ... conv2d_1a_3x3.
Keras names the mixed blocks mixed0..mixed10 (mixed0 = Mixed_5b ... mixed10 = Mixed_7c) and the logits
layer `predictions`; the five stem conv+batch-norm pairs are Conv2d_1a_3x3 ... Conv2d_4a_3x3.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from .errors import SanityError
from .randomize import Block

WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels.h5"
WEIGHTS_HOST = ("storage.googleapis.com", 443)
MIXED_NAMES = ["mixed_5b", "mixed_5c", "mixed_5d", "mixed_6a", "mixed_6b", "mixed_6c", "mixed_6d", "mixed_6e",
               "mixed_7a", "mixed_7b", "mixed_7c"]
STEM_NAMES = ["conv2d_1a_3x3", "conv2d_2a_3x3", "conv2d_2b_3x3", "conv2d_3b_1x1", "conv2d_4a_3x3"]
PAPER_BLOCKS = ["logits", *reversed(MIXED_NAMES), *reversed(STEM_NAMES)]


def cached_weights_path() -> Path:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / WEIGHTS_FILE


def _reachable(timeout: float = 2.0) -> bool:
    try:
        socket.create_connection(WEIGHTS_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve_weights(weights) -> str | None:
    """'imagenet' (Keras' download and cache), a local .h5 file, or none (random initialisation)."""
    if weights is None or str(weights).lower() in ("none", "null", "random"):
        return None
    if str(weights).lower() == "imagenet":
        cached = cached_weights_path()
        if not cached.exists() and not _reachable():
            raise SanityError(f"InceptionV3 ImageNet weights are not cached and the download server is unreachable "
                              f"(offline?); copy {WEIGHTS_FILE} to {cached}, or pass model.weights=/path/to/file.h5 "
                              f"(model.weights=none for random weights)")
        return "imagenet"
    path = Path(str(weights)).expanduser()
    if not path.is_file():
        raise SanityError(f"model.weights file {path} does not exist; give the path of {WEIGHTS_FILE}, "
                          f"or model.weights=imagenet / none")
    return str(path)


def build(weights="imagenet"):
    """InceptionV3 at 299x299 returning logits (no softmax), with the requested weights."""
    import keras

    resolved = resolve_weights(weights)
    try:
        return keras.applications.InceptionV3(weights=resolved, classifier_activation=None)
    except (OSError, ValueError) as err:
        raise SanityError(f"cannot load InceptionV3 weights from {weights} ({' '.join(str(err).split())[:160]}); "
                          f"give a valid {WEIGHTS_FILE} or model.weights=none") from None


def blocks(model) -> list[Block]:
    """The paper's 17 blocks, logits first. Every layer with variables lands in exactly one block: stem layers
    by their order (conv + batch norm pairs), mixed-block layers by the mixedN concatenation that closes them."""
    stem: list[list[str]] = []
    mixed: list[list[str]] = [[] for _ in MIXED_NAMES]
    logits: list[str] = []
    current = 0
    for layer in model.layers:
        match = re.fullmatch(r"mixed(\d+)", layer.name)
        if layer.name == "predictions":
            logits.append(layer.name)
        elif match:  # the concatenation closing mixed block N; later layers belong to block N+1
            current = int(match.group(1)) + 1
        elif not layer.weights:
            continue
        elif len(stem) < len(STEM_NAMES) or len(stem[-1]) < 2:  # stem: five conv + batch-norm pairs, in order
            if layer.__class__.__name__ == "Conv2D":
                stem.append([layer.name])
            elif stem and len(stem[-1]) == 1:
                stem[-1].append(layer.name)
            else:
                raise SanityError(f"layer {layer.name} breaks the InceptionV3 stem layout (conv + batch norm)")
        elif current < len(MIXED_NAMES):
            mixed[current].append(layer.name)
        else:
            raise SanityError(f"layer {layer.name} follows the last mixed block; not an InceptionV3 layout")
    if len(stem) != len(STEM_NAMES) or not logits or any(not m for m in mixed):
        raise SanityError("model does not have the InceptionV3 layout (5 stem convs, mixed0..mixed10, predictions)")
    ordered = [Block("logits", tuple(logits))]
    ordered += [Block(name, tuple(layers)) for name, layers in reversed(list(zip(MIXED_NAMES, mixed)))]
    ordered += [Block(name, tuple(layers)) for name, layers in reversed(list(zip(STEM_NAMES, stem)))]
    return ordered
