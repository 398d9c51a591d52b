"""Model architectures and their randomization blocks.

The MNIST / Fashion-MNIST CNN and MLP follow the paper's released code
(adebayoj/sanity_checks_saliency, MNIST experiments):
  CNN = conv 5x5x32 + ReLU + 2x2 max-pool, conv 5x5x64 + ReLU + 2x2 max-pool, dense 1024 + ReLU, dense 10 logits;
  MLP = dense 2500, 1500, 500 (ReLU) and dense 10 logits.
Both output pre-softmax logits and take inputs scaled to [0, 1].

Initializers are the released code's (src/train_cnn_models.py, src/train_mlp_models.py), so that
`test.init=layer` re-initialises a block exactly as the paper did:
  CNN: every kernel truncated_normal(stddev=0.1), every bias constant(0.1);
  MLP: every kernel truncated_normal(stddev=2/sqrt(fan_in)), every bias zero.
(Truncated at two standard deviations, as tf.truncated_normal; 2x2 max-pooling 'SAME' and 'VALID' agree on
28x28 inputs.)

Paper Sec. 5's two models, on any images (their input shape comes from the data set), random weights by default:
  linear       = f(x) = W^T flatten(x) + b, one dense unit per class;
  conv_sumpool = l_k(x) = sum_ij ReLU(w_k * x + b_k)_ij, one 3x3 convolution (no padding) with ReLU, summed over
                 space, one output per filter k (sum pooling = global average pooling times the number of positions).
Kernels truncated_normal(stddev=1/sqrt(fan_in), seeded), biases zero.

A model's randomization blocks are listed from the output down (paper Sec. 3.1: "cascading randomization
from the top layer"): each block names the Keras layers whose variables it re-initialises.
"""

from __future__ import annotations

import keras
import numpy as np

from .randomize import Block

# 2: the released code's initializers; bump when an architecture changes: it is part of the model-cache key
ARCHITECTURE_VERSION = 2


def _cnn_init() -> dict:
    """The released CNN's weight_variable / bias_variable: truncated_normal(stddev=0.1), constant(0.1)."""
    return {"kernel_initializer": keras.initializers.TruncatedNormal(stddev=0.1),
            "bias_initializer": keras.initializers.Constant(0.1)}


def _mlp_init(fan_in: int) -> dict:
    """The released MLP's neuron_layer: truncated_normal(stddev=2/sqrt(fan_in)), zero bias."""
    return {"kernel_initializer": keras.initializers.TruncatedNormal(stddev=2.0 / float(np.sqrt(fan_in))),
            "bias_initializer": keras.initializers.Zeros()}


def mnist_cnn(input_shape=(28, 28, 1), num_classes: int = 10) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(32, 5, padding="same", activation="relu", name="conv1", **_cnn_init())(inputs)
    x = keras.layers.MaxPooling2D(2, padding="same", name="pool1")(x)
    x = keras.layers.Conv2D(64, 5, padding="same", activation="relu", name="conv2", **_cnn_init())(x)
    x = keras.layers.MaxPooling2D(2, padding="same", name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(1024, activation="relu", name="fc1", **_cnn_init())(x)
    outputs = keras.layers.Dense(num_classes, name="logits", **_cnn_init())(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")


def mnist_mlp(input_shape=(28, 28, 1), num_classes: int = 10) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    fan_in = int(np.prod(input_shape))
    for units, name in ((2500, "fc1"), (1500, "fc2"), (500, "fc3")):
        x = keras.layers.Dense(units, activation="relu", name=name, **_mlp_init(fan_in))(x)
        fan_in = units
    outputs = keras.layers.Dense(num_classes, name="logits", **_mlp_init(fan_in))(x)
    return keras.Model(inputs, outputs, name="mnist_mlp")


def _seeded_init(fan_in: int, seed: int) -> dict:
    """Sec. 5's models: kernel truncated_normal(stddev=1/sqrt(fan_in)) from `seed`, bias zero."""
    return {"kernel_initializer": keras.initializers.TruncatedNormal(stddev=1.0 / float(np.sqrt(fan_in)), seed=seed),
            "bias_initializer": keras.initializers.Zeros()}


def linear(input_shape=(28, 28, 1), classes: int = 10, seed: int = 0) -> keras.Model:
    """f(x) = W^T flatten(x) + b: one dense unit per class on the flattened image (paper Sec. 5's f(x) = w . x)."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    outputs = keras.layers.Dense(classes, name="logits", **_seeded_init(int(np.prod(input_shape)), seed))(x)
    return keras.Model(inputs, outputs, name="linear")


def conv_sumpool(input_shape=(28, 28, 1), filters: int = 10, seed: int = 0) -> keras.Model:
    """l_k(x) = sum_ij ReLU(w_k * x + b_k)_ij (paper Sec. 5): one 3x3 convolution without padding, ReLU, summed over
    the (H - 2)(W - 2) positions; output k is filter k's sum."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(filters, 3, padding="valid", activation="relu", name="conv",
                            **_seeded_init(9 * int(input_shape[-1]), seed))(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="mean_over_space")(x)
    positions = (int(input_shape[0]) - 2) * (int(input_shape[1]) - 2)
    outputs = keras.layers.Rescaling(float(positions), name="sum_over_space")(x)
    return keras.Model(inputs, outputs, name="conv_sumpool")


def layer_blocks(model: keras.Model) -> list[Block]:
    """Default blocks: every layer that owns variables is its own block, output layer first."""
    return [Block(layer.name, (layer.name,)) for layer in reversed(model.layers) if layer.weights]
