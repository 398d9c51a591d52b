"""A Keras model as a chain of steps, for the layer-wise methods (LRP, DeepLIFT).

A step is one leaf layer (nested models are opened): an affine map (Dense, Conv2D; a BatchNormalization right after
one without activation is folded into it, W' = W s, b' = (b - mu) s + beta with s = gamma / sqrt(var + eps)), a
pooling, a reshape (Flatten, Reshape) or the identity (InputLayer, Dropout and the other inference-time no-ops),
followed by an elementwise activation (ReLU layers and Activation layers are identity steps with an activation).
Only chains are accepted: a model whose output depends on a layer with two inputs (a branch) is refused in one line,
as is any layer type without a rule. Weights are read from the layers' variables when the traced function runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import SanityError

# step kinds
AFFINE, AVGPOOL, MAXPOOL, RESHAPE = "affine", "avgpool", "maxpool", "reshape"
IDENTITY, BATCHNORM = "identity", "batchnorm"
# Elementwise activations (their Keras function names); DeepLIFT's rescale rule applies to any of them, LRP's
# rules to 'linear' and 'relu' only.
ELEMENTWISE = {"linear", "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "swish", "mish",
               "sigmoid", "hard_sigmoid", "hard_silu", "hard_swish", "log_sigmoid", "tanh", "hard_tanh", "softplus",
               "softsign", "exponential", "sparse_plus", "squareplus", "tanh_shrink", "soft_shrink", "hard_shrink"}


@dataclass
class Step:
    layer: object
    kind: str
    activation: str = "linear"       # name of the elementwise activation after the step
    act: Callable | None = None      # that activation (None: linear)
    batchnorm: object = None         # a BatchNormalization folded into an affine step

    def weights(self, part: int = 0, bias: bool = True):
        """(kernel, bias) of an affine step, batch norm folded in, read now; part=+1 / -1 keeps the kernel's
        positive / negative entries (and the bias's, when bias)."""
        import tensorflow as tf

        layer = self.layer
        kernel = tf.cast(tf.convert_to_tensor(layer.kernel), tf.float32)
        shift = tf.cast(tf.convert_to_tensor(layer.bias), tf.float32) if layer.use_bias else None
        if self.batchnorm is not None:
            scale, offset = _batchnorm_affine(self.batchnorm)
            kernel = kernel * scale
            shift = offset if shift is None else shift * scale + offset
        if part:
            clip = tf.nn.relu if part > 0 else (lambda w: tf.minimum(w, 0.0))
            kernel, shift = clip(kernel), None if shift is None else clip(shift)
        return kernel, shift if bias else None

    def linear(self, a, part: int = 0, bias: bool = True):
        """The step's pre-activation map of `a` (affine and average-pooling steps); with part=-1 a pooling, whose
        weights are all positive, has none (None)."""
        if self.kind == AVGPOOL:
            return self.layer(a) if part >= 0 else None
        import keras

        kernel, shift = self.weights(part, bias)
        layer = self.layer
        if isinstance(layer, keras.layers.Dense):
            z = keras.ops.matmul(a, kernel)
        else:
            z = keras.ops.conv(a, kernel, strides=layer.strides, padding=layer.padding,
                               data_format=layer.data_format, dilation_rate=layer.dilation_rate)
        return z if shift is None else z + shift

    def pre(self, a):
        """The step's output before its activation."""
        if self.kind in (AFFINE, AVGPOOL):
            return self.linear(a)
        if self.kind in (MAXPOOL, RESHAPE):
            return self.layer(a)
        if self.kind == BATCHNORM:
            return self.layer(a, training=False)
        return a

    def post(self, z):
        return z if self.act is None else self.act(z)


def _batchnorm_affine(layer):
    """(scale, offset) of an inference-time BatchNormalization: y = scale x + offset."""
    import tensorflow as tf

    def value(variable):
        return tf.cast(tf.convert_to_tensor(variable), tf.float32)

    scale = tf.math.rsqrt(value(layer.moving_variance) + layer.epsilon)
    if layer.scale:
        scale = scale * value(layer.gamma)
    offset = -value(layer.moving_mean) * scale
    if layer.center:
        offset = offset + value(layer.beta)
    return scale, offset


def _leaves(model, method: str) -> list:
    """The model's layers on the one path from its input to its output, nested models opened."""
    import keras

    if isinstance(model, keras.Sequential):
        layers = list(model.layers)
    else:
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise SanityError(f"{method}: {model.name} has {len(model.inputs)} inputs and {len(model.outputs)} "
                              f"outputs; this method explains a chain of layers with one input and one output")
        layers, tensor = [], model.outputs[0]
        while True:
            layer, node_index, _ = tensor._keras_history
            if isinstance(layer, keras.layers.InputLayer):
                break
            inputs = keras.tree.flatten(layer._inbound_nodes[node_index].input_tensors)
            if len(inputs) != 1:
                raise SanityError(f"{method}: {model.name} is not a chain of layers (layer '{layer.name}' takes "
                                  f"{len(inputs)} inputs); this method explains Sequential-like models only")
            layers.append(layer)
            tensor = inputs[0]
        layers.reverse()
    leaves = []
    for layer in layers:
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):  # a nested keras.Model
            leaves.extend(_leaves(layer, method))
        else:
            leaves.append(layer)
    return leaves


def _rank(layer) -> int:
    """The rank of the layer's output (batch axis included); 0 when Keras cannot tell."""
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):
        return 0


def _activation_name(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def chain(model, method: str, *, lrp: bool) -> list[Step]:
    """The model's steps, checked for `method` (named in errors): with `lrp`, every activation must be linear or a
    plain ReLU and every BatchNormalization must fold into the Dense/Conv2D before it; DeepLIFT (not lrp) takes any
    elementwise activation and keeps an unfoldable BatchNormalization as an affine step of its own."""
    import keras

    L = keras.layers
    identity = (L.InputLayer, L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise,
                L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization)
    steps: list[Step] = []
    for layer in _leaves(model, method):
        kind = type(layer)
        described = f"layer '{layer.name}' ({kind.__name__})"
        if kind in identity:
            continue
        if kind in (L.Flatten, L.Reshape):
            steps.append(Step(layer, RESHAPE))
        elif kind in (L.MaxPooling2D, L.GlobalMaxPooling2D):
            steps.append(Step(layer, MAXPOOL))
        elif kind in (L.AveragePooling2D, L.GlobalAveragePooling2D):
            steps.append(Step(layer, AVGPOOL))
        elif kind in (L.Dense, L.Conv2D):
            if getattr(layer, "data_format", "channels_last") != "channels_last":
                raise SanityError(f"{method}: {described} is channels_first; this method takes channels_last models")
            steps.append(Step(layer, AFFINE, _activation_name(layer.activation), layer.activation))
        elif kind is L.BatchNormalization:
            last = steps[-1] if steps else None
            if last is not None and last.kind == AFFINE and last.act is None and last.batchnorm is None \
                    and layer.axis in (-1, _rank(last.layer) - 1):
                last.batchnorm = layer
            elif lrp:
                raise SanityError(f"{method}: {described} does not directly follow a Dense/Conv2D without activation, "
                                  f"so it cannot be folded into it; LRP takes BatchNormalization only there")
            else:
                steps.append(Step(layer, BATCHNORM))
        elif kind is L.ReLU and not (layer.negative_slope or layer.max_value is not None or layer.threshold):
            steps.append(Step(layer, IDENTITY, "relu", keras.activations.relu))
        elif kind is L.Activation:
            steps.append(Step(layer, IDENTITY, _activation_name(layer.activation), layer.activation))
        elif not lrp and kind in (L.ReLU, L.LeakyReLU, L.ELU):
            steps.append(Step(layer, IDENTITY, kind.__name__, layer))
        else:
            raise SanityError(f"{method}: {described} has no rule here; this method takes Dense, Conv2D, pooling, "
                              f"Flatten, Reshape, Dropout, ReLU and BatchNormalization layers (use a gradient method)")
        step = steps[-1]
        if step.activation == "linear":
            step.act = None
        elif lrp and step.activation != "relu" or step.activation not in ELEMENTWISE | {"ReLU", "LeakyReLU", "ELU"}:
            raise SanityError(f"{method}: {described} has activation '{step.activation}'; this method takes "
                              f"{'linear and relu' if lrp else 'elementwise'} activations only (explain the "
                              f"pre-softmax logits)")
    if not steps:
        raise SanityError(f"{method}: {model.name} has no layer to explain")
    return steps
