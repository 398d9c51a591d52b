"""The gradient engine: every gradient method as a `Recipe` of passes, run inside traced functions.

A recipe's passes take d f_c / d x, where f_c is the target class's pre-softmax logit (output='logit', the
paper's choice) or its softmax probability. `GradientEngine.maps_many` runs several recipes on the same images:
noise, path points, passes and per-image sums happen on the device, one traced function per group of recipes
(methods/passes.py builds it), one array per recipe back per chunk of images (and, at float32, the logits of the
images when a recipe passes them through the model as they are). Weights are read from the model's variables at
call time, so in-place randomization never retraces. An engine runs with explicit options (options.EngineOptions:
XLA, precision, batch size) and is cached per model and options (`engine_for`); nothing is module state.
TensorFlow is imported where gradients are taken, not when this module is: the config checks that list
the methods and their parameters run without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..errors import SanityError
from ..randomize import leaf_layers
from .declared import OUTPUTS
from .noise import image_seeds
from .options import EngineOptions
from .passes import Graph, maps_function, select
from .relu import RELU_RULES

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Recipe:
    """A gradient-based map as gradient passes, all of them inside one traced function per chunk of images.

    E(x) = sum_k w_k m_k ⊙ d f_c(z_k) / d z_k, over path points z_k = x' + a_k (x - x') with m_k = x - x' when
    `path` (Integrated Gradients), else the one point z = x with m = z (`times_input`, Gradient ⊙ Input) or 1.
    With `samples` > 0 (a noise tunnel) the result is the mean (1/n) sum_s E(x + eps_s) (and, with `variance`,
    the variance (1/n) sum_s (E(x + eps_s) - mean)^2, merged across blocks by Chan et al.'s update),
    eps_s ~ N(0, (sigma (max x - min x))^2) drawn on the device from a stateless
    generator seeded per image, so a map depends on the seed and the image's index only. `baseline` and `sigma`
    are passed as tensors (not part of the traced function's key), so changing them never retraces."""
    output: str = "logit"
    relu_rule: str = "gradient"  # every ReLU's backward pass: the gradient's, "guided" (Guided Backprop), "deconvnet"
    times_input: bool = False
    path: bool = False
    alphas: tuple = (1.0,)
    weights: tuple = (1.0,)
    samples: int = 0
    variance: bool = False
    baseline: object = field(default=0.0, compare=False)
    sigma: float = field(default=0.0, compare=False)

    def __post_init__(self):
        if self.output not in OUTPUTS:
            raise SanityError(f"output must be one of {', '.join(OUTPUTS)}, got '{self.output}'")
        if self.relu_rule not in RELU_RULES:
            raise SanityError(f"relu_rule must be one of {', '.join(RELU_RULES)}, got '{self.relu_rule}'")

    @property
    def passes(self) -> int:
        """Model inputs per image: samples x path points."""
        return max(self.samples, 1) * len(self.alphas)

    def blocks(self, batch_size: int) -> tuple[int, int, int]:
        """(images per chunk, samples per pass, path points per pass): at most `batch_size` model inputs per
        pass; a chunk's samples and path points are looped over inside the traced function."""
        if batch_size < 1:
            raise SanityError(f"batch_size must be >= 1, got {batch_size}")
        samples, steps = max(self.samples, 1), len(self.alphas)
        step_block = min(steps, batch_size)
        sample_block = min(samples, max(1, batch_size // steps)) if steps <= batch_size else 1
        return max(1, batch_size // self.passes), sample_block, step_block


def clean_logits(recipes, precision: str) -> int | None:
    """The index of the first recipe of a shared call whose points are x itself (no path, no noise), whose
    forward pass therefore gives the model's logits of x for free; None when there is none, or when the passes
    run through a mixed-precision clone (its logits are not the model's)."""
    if precision != "float32":
        return None
    return next((r for r, recipe in enumerate(recipes) if not recipe.path and not recipe.samples), None)


def _groups(recipes: list[Recipe], batch_size: int) -> list[list[int]]:
    """Indices of the recipes sharing model calls: in order, all with the same ReLU backward rule, whose passes per
    image sum to at most batch_size; a recipe with more passes per image than that is a group of its own."""
    groups: list[list[int]] = []
    for rule in RELU_RULES:
        current, used = [], 0
        for i, recipe in enumerate(recipes):
            if recipe.relu_rule != rule:
                continue
            if recipe.passes > batch_size:
                groups.append([i])
                continue
            if used + recipe.passes > batch_size:
                groups.append(current)
                current, used = [], 0
            current.append(i)
            used += recipe.passes
        if current:
            groups.append(current)
    return groups


def _baseline(recipe: Recipe, shape) -> np.ndarray:
    try:
        return np.broadcast_to(np.asarray(recipe.baseline, np.float32), (1, *shape))
    except (TypeError, ValueError):
        values = np.ravel(recipe.baseline)
        raise SanityError(f"integrated_gradients: baseline has {len(values)} values but the model's input has "
                          f"{shape[-1]} channels; give one number, or one per channel") from None


class GradientEngine:
    """Batched gradients of one model under one set of options. Get it with `engine_for(model, options)`."""

    def __init__(self, model: keras.Model, options: EngineOptions):
        import tensorflow as tf

        self.model, self.options = model, options
        self._functions: dict[tuple, Callable] = {}
        self._mixed: tuple | None = None  # (the clone computing in options.precision, its traced weight sync)
        # One signature for any batch size: each function is traced once per model.
        self._signature = (tf.TensorSpec([None, *model.input_shape[1:]], tf.float32),
                           tf.TensorSpec([None], tf.int32))

    def _computing_model(self) -> keras.Model:
        """The model the passes run through: the model itself at float32, else its mixed-precision clone with the
        model's current weights (copied variable to variable in one traced call)."""
        precision = self.options.precision
        if precision == "float32":
            return self.model
        if self._mixed is None:
            import keras
            import tensorflow as tf

            def relayer(layer):
                return layer.__class__.from_config({**layer.get_config(), "dtype": precision})

            try:
                clone = keras.models.clone_model(self.model, clone_function=relayer, recursive=True)
                pairs = list(zip(clone.weights, self.model.weights, strict=True))
                if any(a.shape != b.shape for a, b in pairs):
                    raise ValueError("weights differ")
                if any(layer.weights and layer.dtype_policy.name != precision for layer in leaf_layers(clone)):
                    raise ValueError("a layer kept float32")
            except Exception as err:
                raise SanityError(f"precision={precision}: {self.model.name} cannot be rebuilt with a mixed-precision "
                                  f"policy ({type(err).__name__}); use precision=float32") from None
            self._mixed = (clone, tf.function(lambda: [a.assign(b) for a, b in pairs], autograph=False))
        clone, sync = self._mixed
        sync()
        return clone

    def _maps_function(self, recipes: tuple[Recipe, ...], sample_block: int, step_block: int) -> Callable:
        key = ("maps", recipes, sample_block, step_block)
        if key not in self._functions:
            model = self.model if self.options.precision == "float32" else self._mixed[0]
            graph = Graph(model, tuple(self.model.input_shape[1:]), self.options.precision)
            # a group shares its model calls: one ReLU rule (maps_many)
            self._functions[key] = maps_function(graph, recipes, sample_block, step_block,
                                                 clean_logits(recipes, self.options.precision), recipes[0].relu_rule,
                                                 self.options.jit_compile, self._signature)
        return self._functions[key]

    def maps_many(self, x: np.ndarray, targets: np.ndarray, recipes: list[Recipe], seeds: list,
                  logits: bool = False):
        """Each recipe's maps of every row of x (recipe i with noise seed seeds[i]). Recipes whose passes for one
        image fit in one model call together (with one ReLU backward rule) share each chunk's call; a recipe with
        more passes per image than the batch size runs alone, its samples and path points looped over on the
        device. One transfer out per chunk of images. With `logits`, returns (maps, the model's logits of x from
        the passes of a recipe that sends x itself through the float32 model, or None when none does)."""
        import tensorflow as tf

        x, targets = np.asarray(x, np.float32), np.asarray(targets, np.int32)
        batch_size = self.options.batch_size
        self._computing_model()
        out: list[np.ndarray | None] = [None] * len(recipes)
        seen_logits = None
        for group in _groups(recipes, batch_size):
            members = tuple(recipes[i] for i in group)
            if len(group) == 1:
                images_per_chunk, sample_block, step_block = members[0].blocks(batch_size)
            else:
                images_per_chunk, sample_block, step_block = batch_size // sum(r.passes for r in members), 0, 0
            fn = self._maps_function(members, sample_block, step_block)
            seed_rows = np.stack([image_seeds(seeds[i], len(x)) if recipes[i].samples
                                  else np.zeros((len(x), 2), np.int32) for i in group], axis=1)
            baselines = tf.constant(np.stack([_baseline(r, x.shape[1:]) for r in members]))
            sigmas = tf.constant([r.sigma for r in members], tf.float32)
            maps = chunked(lambda xs, ts, ss: tuple(m.numpy() for m in fn(tf.constant(xs), tf.constant(ts),
                                                                       tf.constant(ss), baselines, sigmas)),
                           images_per_chunk, x, targets, seed_rows)
            for i, m in zip(group, maps):
                out[i] = m
            if len(maps) > len(group):
                seen_logits = maps[-1]
        return (out, seen_logits) if logits else out

    def maps(self, x: np.ndarray, targets: np.ndarray, recipe: Recipe, *, seed=0) -> np.ndarray:
        """The recipe's maps of every row of x."""
        return self.maps_many(x, targets, [recipe], [seed])[0]

    def gradients(self, x: np.ndarray, targets: np.ndarray, *, output: str = "logit",
                  relu_rule: str = "gradient") -> np.ndarray:
        """d f_c / d x for every row of x (with modified ReLU backward passes: relu_rule), in chunks of the batch
        size through one traced function."""
        return self.maps(x, targets, Recipe(output=output, relu_rule=relu_rule))

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        if "logits" not in self._functions:
            model = self.model
            self._functions["logits"] = tf.function(lambda xs: model(xs, training=False),
                                                    input_signature=self._signature[:1],
                                                    jit_compile=self.options.jit_compile, autograph=False)
        fn = self._functions["logits"]
        return chunked(lambda xs: (fn(tf.constant(xs)).numpy(),), self.options.batch_size,
                       np.asarray(x, np.float32))[0]

    def conv_layer_names(self) -> list[str]:
        return conv_layer_names(self.model)

    def gradcam(self, x: np.ndarray, targets: np.ndarray, layer: str, *, output: str = "logit",
                upsampling: str = "bilinear") -> np.ndarray:
        """Grad-CAM maps (N,H,W): ReLU(sum_k alpha_k A^k), alpha_k = mean_ij d f_c/d A^k_ij, bilinearly upsampled:
        `bilinear` with half-pixel centres (tf.image.resize), or `legacy`, TensorFlow 1's resize_bilinear without
        them, which PAIR saliency 0.0.x (and so the released notebooks) used."""
        import tensorflow as tf

        valid = self.conv_layer_names()
        if layer not in valid:
            raise SanityError(f"gradcam: layer '{layer}' is not a conv layer of {self.model.name}; "
                              f"valid layers: {', '.join(valid) or 'none (the model has no conv layer)'}")
        key = ("gradcam", layer, output, upsampling)
        if key not in self._functions:
            cam_model = activations_and_outputs(self.model, layer)
            height, width = self.model.input_shape[1:3]

            @tf.function(input_signature=self._signature, jit_compile=self.options.jit_compile, autograph=False)
            def cam_fn(x, targets):
                with tf.GradientTape() as tape:
                    activations, outputs = cam_model(x, training=False)
                    score = select(outputs, targets, output)
                grads = tape.gradient(score, activations)
                alpha = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
                cam = tf.nn.relu(tf.reduce_sum(alpha * activations, axis=-1, keepdims=True))
                if upsampling == "legacy":
                    return tf.compat.v1.image.resize_bilinear(cam, (height, width), align_corners=False,
                                                              half_pixel_centers=False)[..., 0]
                return tf.image.resize(cam, (height, width), method="bilinear")[..., 0]

            self._functions[key] = cam_fn
        fn = self._functions[key]
        return chunked(lambda xs, ts: (fn(tf.constant(xs), tf.constant(ts)).numpy(),), self.options.batch_size,
                       np.asarray(x, np.float32), np.asarray(targets, np.int32))[0]


def conv_layer_names(model) -> list[str]:
    """Top-level layers with a 4-D (batch, height, width, channels) output, in model order: valid GradCAM layers
    (the last is the default for your own model)."""
    import keras

    return [layer.name for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer) and len(getattr(layer, "output", None).shape
                                                                      if hasattr(layer, "output") else ()) == 4]


def activations_and_outputs(model, layer: str):
    """A callable x -> (the layer's activations, the model's outputs). For a Sequential whose layer is a nested
    model (a keras.applications base), whose own graph is not connected to the Sequential's input, the layers
    are called in order instead."""
    import keras

    if not isinstance(model, keras.Sequential):
        # the layer's output in this model's graph: the node of this graph where the layer is called (a layer, or
        # a base model called inside a functional wrapper, may also have been called in other graphs)
        target = model.get_layer(layer)
        graph = {id(node) for nodes in getattr(model, "_nodes_by_depth", {}).values() for node in nodes}
        tensors = [tensor for node in getattr(target, "_inbound_nodes", []) if id(node) in graph
                   for tensor in node.output_tensors]
        for tensor in tensors or [target.output]:
            try:
                return keras.Model(model.inputs, [tensor, model.outputs[0]])
            except ValueError:
                continue
        raise SanityError(f"gradcam: the output of layer '{layer}' is not connected to {model.name}'s input; "
                          f"set method.gradcam.layer to another layer")
    names = [item.name for item in model.layers]
    split = names.index(layer) + 1

    def call(x, training=False):
        for item in model.layers[:split]:
            x = item(x, training=training)
        activations = x
        for item in model.layers[split:]:
            x = item(x, training=training)
        return activations, x

    return call


def chunked(call, chunk: int, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """call(*rows) on `chunk` rows of every array at a time; its outputs concatenated (float32)."""
    if chunk < 1:
        raise SanityError(f"batch_size must be >= 1, got {chunk}")
    parts = [call(*(a[i:i + chunk] for a in arrays)) for i in range(0, len(arrays[0]), chunk)]
    return tuple(np.concatenate(outs, axis=0).astype(np.float32, copy=False) for outs in zip(*parts))


def engine_for(model: keras.Model, options: EngineOptions | None = None) -> GradientEngine:
    """The model's engine for these options (its traced functions are reused across calls, stages and methods).
    The engines live on the model itself, so they are freed together."""
    options = options or EngineOptions()
    engines = model.__dict__.get("_sanity_engines")
    if engines is None:
        engines = {}
        object.__setattr__(model, "_sanity_engines", engines)
    if options not in engines:
        engines[options] = GradientEngine(model, options)
    return engines[options]
