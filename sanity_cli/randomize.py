"""Model parameter randomization in place (paper Sec. 3.1).

Variables are re-initialised by `assign`, never by rebuilding the model, so traced gradient functions
keep working without retracing. `snapshot` / `restore` bring the trained weights back exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import SanityError
from .seeds import derive_seed

if TYPE_CHECKING:  # Keras is imported where variables are re-initialised, not by the config checks
    import keras

INITS = ("layer", "truncated_normal", "uniform", "permutation")
ORDERS = ("top_down", "bottom_up")  # cascading order: from the logits down (the paper) or from the input up


@dataclass(frozen=True)
class Block:
    """One randomization block: a display name (the paper's naming) and the Keras layers it covers."""

    name: str
    layers: tuple[str, ...]

BN_STATISTICS = ("moving_mean", "moving_variance")


def snapshot(model: keras.Model) -> list:
    """The values of every variable (trainable and not) of the model, as tensors where the variables live: a
    read shares the variable's buffer and TensorFlow copies on write, so a later assignment never changes them
    and taking one copies nothing (restoring copies on the device, never through the host). They stay in the
    device's memory beside the randomized weights."""
    import tensorflow as tf

    return [tf.identity(v.value) for v in model.variables]


def restore(model: keras.Model, saved: list) -> None:
    for variable, value in zip(model.variables, saved, strict=True):
        variable.assign(value)




def _seeded(initializer, seed: int):
    """A copy of a Keras initializer with its seed set."""
    config = initializer.get_config()
    if "seed" in config:
        config["seed"] = seed
    return type(initializer).from_config(config)


def _variable_name(variable) -> str:
    return variable.path.rsplit("/", 1)[-1] if hasattr(variable, "path") else variable.name.split(":")[0]


def leaf_layers(model):
    """Every layer, nested models opened (a keras.applications base inside a Sequential), in model order."""
    for layer in model.layers:
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):  # a nested keras.Model
            yield from leaf_layers(layer)
        else:
            yield layer


def find_layer(model: keras.Model, name: str):
    """The layer called `name`, at the top level or inside a nested model; None when there is none."""
    for layer in model.layers:
        if layer.name == name:
            return layer
    return next((layer for layer in leaf_layers(model) if layer.name == name), None)


def block_variables(model: keras.Model, block: Block, reset_bn_statistics: bool = False):
    """(layer, variable) pairs the block re-initialises: trainable variables, plus batch-norm moving
    statistics when asked."""
    pairs = []
    for layer_name in block.layers:
        layer = find_layer(model, layer_name)
        if layer is None:
            raise SanityError(f"block '{block.name}' names layer '{layer_name}', which {model.name} does not have")
        for variable in layer.weights:
            name = _variable_name(variable)
            # trainable weights, and the weights of a frozen layer (trainable=False, as a transfer-learning base
            # often is) that are not batch-norm statistics; the statistics only when asked
            frozen = not variable.trainable and name not in BN_STATISTICS and "float" in str(variable.dtype)
            if variable.trainable or frozen or (reset_bn_statistics and name in BN_STATISTICS):
                pairs.append((layer, variable))
    return pairs


def randomize_block(model: keras.Model, block: Block, seed: int, init: str = "layer", init_std: float = 0.01,
                    reset_bn_statistics: bool = False) -> int:
    """Re-initialise the block's variables in place; returns how many variables were reset.

    init='layer' (the paper's choice): each variable from its layer's own initializer (kernel_initializer,
    bias_initializer, gamma_initializer, ...), reseeded, so the MNIST CNN's biases go back to 0.1 as in the
    released code; 'truncated_normal': N(0, init_std^2) truncated at 2 std; 'uniform': U(-a, a) with
    a = sqrt(3) init_std (the same standard deviation); 'permutation': the variable's own trained values in a
    seeded random order over all its elements (keeps each layer's weight distribution, destroys its structure;
    Quantus' TensorFlow path permutes along the first axis only). Variable i of the block gets the seed
    derive_seed(seed, i). Eager on purpose: tracing one function per block cost a fresh process ~90 ms for the
    MNIST CNN's four blocks and saved ~1 ms per block afterwards (the draws themselves dominate).
    """
    if init not in INITS:
        raise SanityError(f"test.init must be one of {', '.join(INITS)}, got '{init}'")
    if not init_std > 0:
        raise SanityError(f"test.init_std must be > 0, got {init_std}")
    pairs = block_variables(model, block, reset_bn_statistics)
    for index, (layer, variable) in enumerate(pairs):
        variable_seed = derive_seed(seed, index)
        if init == "permutation":
            values = np.asarray(variable.numpy())
            variable.assign(np.random.default_rng(variable_seed).permutation(values.reshape(-1)).reshape(values.shape))
        else:
            initializer = _initializer(layer, variable, init, init_std, variable_seed)
            variable.assign(initializer(variable.shape, dtype=variable.dtype))
    return len(pairs)


def _initializer(layer, variable, init: str, init_std: float, seed: int):
    """The Keras initializer re-drawing `variable` under `init`, seeded by `seed`."""
    import keras

    if init == "truncated_normal":
        return keras.initializers.TruncatedNormal(stddev=init_std, seed=seed)
    if init == "uniform":
        limit = float(np.sqrt(3.0) * init_std)
        return keras.initializers.RandomUniform(-limit, limit, seed=seed)
    own = getattr(layer, f"{_variable_name(variable)}_initializer", None)
    if own is None:  # a variable without a declared initializer: Glorot for matrices, zeros for vectors
        own = keras.initializers.GlorotUniform() if len(variable.shape) > 1 else keras.initializers.Zeros()
    return _seeded(own, seed)
