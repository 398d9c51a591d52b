"""The gradient engine: every gradient method as a `Recipe` of passes, run inside traced functions.

A recipe's passes take d f_c / d x, where f_c is the target class's pre-softmax logit (output='logit', the
paper's choice) or its softmax probability. `GradientEngine.maps_many` runs several recipes on the same images:
noise, path points, passes and per-image sums happen on the device, one traced function per group of recipes
(and XLA / precision setting), one array per recipe back per chunk of images (and, at float32, the logits of
the images when a recipe passes them through the model as they are). Weights are read from the
model's variables at call time, so in-place randomization never retraces. The loops are explicit (Python loops
unrolled at trace time, tf.while_loop where the count is large), so the functions are traced without AutoGraph,
whose source transformation took 1.5 s of a smoke run.
TensorFlow is imported where gradients are taken, not when this module is: the config checks that list
the methods and their parameters run without it.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..errors import SanityError
from ..randomize import leaf_layers

if TYPE_CHECKING:
    import keras

OUTPUTS = ("logit", "probability")
# XLA compilation of the traced functions (config `jit_compile`, set by the pipeline for each run). Off by default:
# on a 2-core CPU it was 2.1x slower for the MNIST CNN (README, "Performance"). XLA rounds differently, so maps
# differ slightly (a ReLU near zero may flip): within 1e-5 in the tests, up to 7.5e-4 for SmoothGrad-50.
JIT_COMPILE = False


def set_jit_compile(enabled: bool) -> None:
    global JIT_COMPILE
    JIT_COMPILE = bool(enabled)


# The precision of the gradient-based methods' passes (config `precision`). Under a mixed policy the maps are
# computed by a clone of the model whose layers compute in float16 / bfloat16 (weights stay float32, synced from
# the model before every call); Grad-CAM's own pass and the logits checks stay float32 (Guided Grad-CAM's guided
# factor is a recipe, so it follows the setting). The benchmark's workload (p)
# reports the maps' error against float32.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
PRECISION = "float32"


def set_precision(precision: str) -> None:
    global PRECISION
    if precision not in PRECISIONS:
        raise SanityError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    PRECISION = precision


@functools.cache
def guided_relu():
    """ReLU whose backward pass keeps only positive gradients where the forward input was positive."""
    import tensorflow as tf

    @tf.custom_gradient
    def relu(x):
        y = tf.nn.relu(x)

        def grad(upstream):
            return upstream * tf.cast(upstream > 0, upstream.dtype) * tf.cast(x > 0, upstream.dtype)

        return y, grad

    return relu


def _is_relu(fn) -> bool:
    import keras

    return fn is keras.activations.relu or getattr(fn, "__name__", "") == "relu"


@contextlib.contextmanager
def guided_relus(model: keras.Model):
    """Temporarily swap every ReLU of `model` for `guided_relu`: ReLU activations inside layers
    (Dense/Conv `activation='relu'`, `Activation('relu')`) and `ReLU` layers. Used only while a
    tf.function traces, so the guided graph shares the model's variables."""
    import keras

    swapped: list[tuple[object, str, object]] = []
    try:
        for layer in leaf_layers(model):
            if isinstance(layer, keras.layers.ReLU):
                if layer.negative_slope or layer.max_value is not None or layer.threshold:
                    raise SanityError(f"guided_backprop: layer '{layer.name}' is a leaky/capped ReLU; "
                                      "guided backprop is defined for plain ReLUs only")
                swapped.append((layer, "call", layer.__dict__.get("call")))
                object.__setattr__(layer, "call", lambda inputs, *a, **k: guided_relu()(inputs))
            elif _is_relu(getattr(layer, "activation", None)):
                swapped.append((layer, "activation", layer.activation))
                object.__setattr__(layer, "activation", guided_relu())
        yield
    finally:
        for layer, attr, old in reversed(swapped):
            if attr == "call" and old is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, attr, old)


def _select(outputs, targets, output: str):
    import tensorflow as tf

    outputs = tf.cast(outputs, tf.float32)  # a mixed-precision model's float16 logits
    if output == "probability":
        outputs = tf.nn.softmax(outputs, axis=-1)
    return tf.gather(outputs, targets, axis=1, batch_dims=1)


@dataclass(frozen=True)
class Recipe:
    """A gradient-based map as gradient passes, all of them inside one traced function per chunk of images.

    E(x) = sum_k w_k m_k ⊙ d f_c(z_k) / d z_k, over path points z_k = x' + a_k (x - x') with m_k = x - x' when
    `path` (Integrated Gradients), else the one point z = x with m = z (`times_input`, Gradient ⊙ Input) or 1.
    With `samples` > 0 (a noise tunnel) the result is the mean (1/n) sum_s E(x + eps_s) (and, with `variance`,
    the variance (1/n) sum_s (E(x + eps_s) - mean)^2, merged across blocks by Chan et al.'s update), eps_s ~ N(0, (sigma (max x - min x))^2) drawn on the device from a stateless
    generator seeded per image, so a map depends on the seed and the image's index only. `baseline` and `sigma`
    are passed as tensors (not part of the traced function's key), so changing them never retraces."""
    output: str = "logit"
    guided: bool = False
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


def clean_logits(recipes) -> int | None:
    """The index of the first recipe of a shared call whose points are x itself (no path, no noise), whose
    forward pass therefore gives the model's logits of x for free; None when there is none, or when the passes
    run through a mixed-precision clone (its logits are not the model's)."""
    if PRECISION != "float32":
        return None
    return next((r for r, recipe in enumerate(recipes) if not recipe.path and not recipe.samples), None)


def _groups(recipes: list[Recipe], batch_size: int) -> list[list[int]]:
    """Indices of the recipes sharing model calls: in order, all guided or none, whose passes per image sum to at
    most batch_size; a recipe with more passes per image than that is a group of its own."""
    groups: list[list[int]] = []
    for guided in (False, True):
        current, used = [], 0
        for i, recipe in enumerate(recipes):
            if recipe.guided != guided:
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


def image_seeds(seed, n: int) -> np.ndarray:
    """(n, 2) int32 seeds of the stateless noise of images 0..n-1: numpy's SeedSequence(seed + [i]), so each
    image's noise depends on the run's seed (a number or a list) and its index only. Read-only; remembered, as
    the stages of a run ask for the same ones (~45 us per image) unless a method reseeds per stage."""
    return _image_seeds(tuple(int(v) for v in np.atleast_1d(seed)), int(n))


@functools.lru_cache(maxsize=64)
def _image_seeds(seed: tuple, n: int) -> np.ndarray:
    seeds = np.stack([np.random.SeedSequence([*seed, i]).generate_state(2) for i in range(n)]).view(np.int32)
    seeds.flags.writeable = False
    return seeds


def standard_normal(shape, seed):
    """N(0, 1) draws from stateless Philox bits (tensor `seed`, 2 int32) by Box-Muller on 24-bit uniforms
    (k + 1/2) 2^-24 (in (0, 1] after float32 rounding). TensorFlow's own stateless_normal turns the same Philox
    bits into floats differently under XLA; this makes the noise the same with and without `jit_compile` (and on
    CPU and GPU) up to float32 rounding of log and cos."""
    return noise_block(seed, shape[0], 0, shape[0], shape[1:])


def noise_block(seed, total: int, first, count: int, shape):
    """Draws first..first+count-1 of standard_normal([total, *shape], seed), (count, *shape), without drawing the
    others: Philox is a counter-based generator, so the bits of any range are reached by advancing its counter
    (element i of a draw comes from counter + i // 4, lane i % 4; the same under XLA). `first` may be a tensor."""
    import tensorflow as tf

    from tensorflow.python.ops import random_ops_util  # the key/counter tf.random.stateless_uniform derives

    size = int(np.prod(shape))
    # the Philox key and counter exactly as stateless_uniform(alg="philox") derives them (the GetKeyCounter op
    # auto-selects another algorithm's state under XLA)
    key, counter, _ = random_ops_util.get_key_counter_alg(seed, "philox")

    def bits(start):
        """count * size uint32 from element `start` of the draw of 2 * total * size."""
        start = tf.cast(start, tf.int64)
        at = tf.concat([counter[:1] + tf.cast(start // 4, tf.uint64), counter[1:]], 0)
        block = tf.raw_ops.StatelessRandomUniformFullIntV2(shape=[count * size + 3], key=key, counter=at, alg=1,
                                                           dtype=tf.uint32)
        return tf.slice(block, tf.reshape(tf.cast(start % 4, tf.int32), [1]), [count * size])

    def uniform(b):
        return (tf.cast(tf.bitwise.right_shift(b, 8), tf.float32) + 0.5) * (2.0 ** -24)

    offset = tf.cast(first, tf.int64) * size
    u0, u1 = uniform(bits(offset)), uniform(bits(total * size + offset))
    return tf.reshape(tf.sqrt(-2.0 * tf.math.log(u0)) * tf.cos((2 * np.pi) * u1), [count, *shape])


def unit_noise(seeds, samples: int, shape) -> np.ndarray:
    """The standard normal draws behind a noise tunnel, (n, samples, *shape): what `Recipe.samples` adds, before
    scaling by sigma (max x - min x). For checks against peers fed the same noise."""
    import tensorflow as tf

    return tf.map_fn(lambda s: standard_normal([samples, *shape], s), tf.constant(seeds),
                     fn_output_signature=tf.float32).numpy()


class GradientEngine:
    """Batched gradients of one model. Get it with `engine_for(model)`."""

    def __init__(self, model: keras.Model):
        import tensorflow as tf

        self.model = model
        self._functions: dict[tuple, Callable] = {}
        self._cam_models: dict[str, keras.Model] = {}
        self._mixed: dict[str, tuple] = {}  # precision -> (clone computing in it, traced weight sync)
        # One signature for any batch size: each function is traced once per model.
        self._signature = (tf.TensorSpec([None, *model.input_shape[1:]], tf.float32),
                           tf.TensorSpec([None], tf.int32))

    def _computing_model(self) -> keras.Model:
        """The model the passes run through at PRECISION: the model itself at float32, else its mixed-precision
        clone with the model's current weights (copied variable to variable in one traced call)."""
        if PRECISION == "float32":
            return self.model
        if PRECISION not in self._mixed:
            import keras
            import tensorflow as tf

            def relayer(layer):
                return layer.__class__.from_config({**layer.get_config(), "dtype": PRECISION})

            try:
                clone = keras.models.clone_model(self.model, clone_function=relayer, recursive=True)
                pairs = list(zip(clone.weights, self.model.weights, strict=True))
                if any(a.shape != b.shape for a, b in pairs):
                    raise ValueError("weights differ")
                if any(layer.weights and layer.dtype_policy.name != PRECISION for layer in leaf_layers(clone)):
                    raise ValueError("a layer kept float32")
            except Exception as err:
                raise SanityError(f"precision={PRECISION}: {self.model.name} cannot be rebuilt with a mixed-precision "
                                  f"policy ({type(err).__name__}); use precision=float32") from None
            sync = tf.function(lambda: [a.assign(b) for a, b in pairs], autograph=False)
            self._mixed[PRECISION] = (clone, sync)
        clone, sync = self._mixed[PRECISION]
        sync()
        return clone

    def _maps_function(self, recipes: tuple[Recipe, ...], sample_block: int, step_block: int) -> Callable:
        """The traced function of a group of recipes sharing each chunk's model calls: fn(x, targets, seeds
        (B, R, 2), baselines (R, 1, *shape), sigmas (R,)) -> one map per recipe, then the logits of x when
        `clean_logits` names a recipe. Several recipes (their passes
        for one image fit in one call together) send all their points through one forward+backward pass; a
        single recipe loops over blocks of `sample_block` samples x `step_block` path points."""
        key = ("maps", recipes, sample_block, step_block, JIT_COMPILE, PRECISION)
        if key not in self._functions:
            import tensorflow as tf

            model = self.model if PRECISION == "float32" else self._mixed[PRECISION][0]
            shape = list(self.model.input_shape[1:])
            ones = [1] * len(shape)
            guided = recipes[0].guided  # a group shares its model calls: all guided or none (maps_many)

            def repeat_rows(values, times: int):
                """Each entry `times` times in a row (tf.repeat's result, in far fewer graph ops)."""
                return values if times == 1 else tf.reshape(tf.tile(values[:, None], [1, times]), [-1])

            def score_of(logits, targets, outputs):
                if len({output for _, _, output in outputs}) == 1:  # one kind of score for every row
                    return _select(logits, targets, outputs[0][2])
                return tf.concat([_select(logits[start:stop], targets[start:stop], output)
                                  for start, stop, output in outputs], axis=0)

            def gradients(points, targets, outputs):
                """(d f_c / d z for every point, the logits); `outputs`: (rows, output) spans, each recipe's own
                score."""
                with tf.GradientTape() as tape:
                    tape.watch(points)
                    logits = model(points, training=False)
                    if PRECISION == "float32":
                        score = score_of(logits, targets, outputs)
                if PRECISION == "float32":
                    return tape.gradient(score, points), logits
                # Half precision: d score / d logits in float32, scaled to a largest entry of 1 per row before it
                # enters the 16-bit network (a softmax probability's gradient, p_c (1[j = c] - p_j), underflows
                # float16 once the logit gap passes ~17), the scale multiplied back after.
                held = tf.stop_gradient(tf.cast(logits, tf.float32))
                with tf.GradientTape() as inner:
                    inner.watch(held)
                    score = score_of(held, targets, outputs)
                upstream = inner.gradient(score, held)
                scale = tf.reduce_max(tf.abs(upstream), axis=1, keepdims=True)
                scale = tf.where(scale > 0, scale, tf.ones_like(scale))
                grads = tape.gradient(logits, points, output_gradients=tf.cast(upstream / scale, logits.dtype))
                return grads * tf.reshape(scale, [-1, *ones]), logits

            def noisy(recipe, x, seeds, sigma, first=0, count=None):
                """x + eps_s for samples first..first+count-1: (B, count, *shape) (only those samples' noise is
                drawn); x itself (B, 1, *shape) without noise."""
                if not recipe.samples:
                    return x[:, None]
                count = recipe.samples if count is None else count
                axes = list(range(1, len(shape) + 1))
                span = tf.reduce_max(x, axis=axes) - tf.reduce_min(x, axis=axes)
                unit = tf.map_fn(lambda s: noise_block(s, recipe.samples, first, count, shape), seeds,
                                 fn_output_signature=tf.float32)
                return x[:, None] + unit * tf.reshape(sigma * span, [-1, 1, *ones])

            def block_points(recipe, xs, baseline, first, n):
                """The model inputs of path points first..first+n of every sample: (B, samples, n, *shape)."""
                if not recipe.path:
                    return xs[:, :, None]
                a = tf.reshape(tf.slice(tf.constant(recipe.alphas, tf.float32), [first], [n]), [1, 1, n, *ones])
                return baseline + a * (xs - baseline)[:, :, None]

            def step_sum(recipe, g, first, n):
                """sum_k w_k g_k over the block's path points: (B, samples, *shape)."""
                if not recipe.path:
                    return g[:, :, 0]
                w = tf.reshape(tf.slice(tf.constant(recipe.weights, tf.float32), [first], [n]), [1, 1, n, *ones])
                return tf.reduce_sum(w * g, axis=2)

            def sample_map(recipe, xs, baseline, summed):
                """E(x + eps_s) from its summed gradients: times x - x' (IG), times the input (Gradient ⊙ Input)."""
                if recipe.path:
                    return (xs - baseline) * summed
                return xs * summed if recipe.times_input else summed

            def moments(recipe, e):
                """The block's sum over its samples, and with `variance` its squared deviations from its own mean
                (no float32 cancellation; blocks merge by Chan et al.'s update)."""
                total = tf.reduce_sum(e, axis=1)
                if not recipe.variance:
                    return (total,)
                return total, tf.reduce_sum(tf.square(e - total[:, None] / tf.cast(tf.shape(e)[1], tf.float32)), 1)

            def finish(recipe, sums):
                n = max(recipe.samples, 1)
                return sums[1] / n if recipe.variance else sums[0] / n

            def together(x, targets, seeds, baselines, sigmas):
                """Every recipe's points of the chunk in one model call; after the maps, the logits of x when a
                recipe passes x itself through the float32 model (see `clean_logits`)."""
                points, per_point, outputs, noisy_inputs, start = [], [], [], [], 0
                for r, recipe in enumerate(recipes):
                    xs = noisy(recipe, x, seeds[:, r], sigmas[r])
                    z = block_points(recipe, xs, baselines[r], 0, len(recipe.alphas))
                    noisy_inputs.append((xs, tf.shape(z)))
                    points.append(tf.reshape(z, [-1, *shape]))
                    per_point.append(repeat_rows(targets, recipe.passes))
                    outputs.append((start, start + tf.shape(points[-1])[0], recipe.output))
                    start = outputs[-1][1]
                grads, logits = gradients(tf.concat(points, 0), tf.concat(per_point, 0), outputs)
                maps = []
                for r, (recipe, (xs, z_shape), (first, stop, _)) in enumerate(zip(recipes, noisy_inputs, outputs)):
                    g = tf.reshape(grads[first:stop], z_shape)
                    e = sample_map(recipe, xs, baselines[r], step_sum(recipe, g, 0, len(recipe.alphas)))
                    maps.append(finish(recipe, moments(recipe, e)))
                clean = clean_logits(recipes)
                if clean is not None:
                    maps.append(tf.cast(logits[outputs[clean][0]:outputs[clean][1]], tf.float32))
                return tuple(maps)

            def looped(x, targets, seeds, baselines, sigmas):
                """One recipe, its samples and path points in blocks (while loops, Kahan-compensated sums)."""
                recipe, baseline = recipes[0], baselines[0]
                steps = len(recipe.alphas)

                def sample_sums(first, n):
                    xs = noisy(recipe, x, seeds[:, 0], sigmas[0], first, n)
                    per_point = repeat_rows(targets, n)

                    def step_block_sum(k, m):
                        z = block_points(recipe, xs, baseline, k, m)
                        g, _ = gradients(tf.reshape(z, [-1, *shape]), repeat_rows(per_point, m),
                                         [(0, None, recipe.output)])
                        return (step_sum(recipe, tf.reshape(g, tf.shape(z)), k, m),)

                    summed = _fold(steps, step_block, step_block_sum, [tf.zeros_like(xs)])[0]
                    return moments(recipe, sample_map(recipe, xs, baseline, summed))

                def merge(sums, values, before, n):
                    """Chan et al.: M2 = M2_a + M2_b + (mean_b - mean_a)^2 n_a n_b / (n_a + n_b)."""
                    if not recipe.variance:
                        return values
                    before = tf.cast(before, tf.float32)
                    gap = values[0] / n - sums[0] / tf.maximum(before, 1.0)
                    return values[0], values[1] + tf.square(gap) * (before * n / (before + n))

                zero = tf.zeros_like(x)
                sums = _fold(max(recipe.samples, 1), sample_block, sample_sums,
                             [zero, zero] if recipe.variance else [zero], merge)
                return (finish(recipe, sums),)

            one_pass = len(recipes) > 1 or (sample_block, step_block) == (max(recipes[0].samples, 1),
                                                                           len(recipes[0].alphas))
            body = together if one_pass else looped

            @tf.function(input_signature=(*self._signature, tf.TensorSpec([None, len(recipes), 2], tf.int32),
                                          tf.TensorSpec([len(recipes), 1, *shape], tf.float32),
                                          tf.TensorSpec([len(recipes)], tf.float32)),
                         jit_compile=JIT_COMPILE, autograph=False)
            def maps_fn(x, targets, seeds, baselines, sigmas):
                with guided_relus(model) if guided else contextlib.nullcontext():
                    return body(x, targets, seeds, baselines, sigmas)

            self._functions[key] = maps_fn
        return self._functions[key]

    def maps_many(self, x: np.ndarray, targets: np.ndarray, recipes: list[Recipe], seeds: list,
                  batch_size: int = 256, logits: bool = False):
        """Each recipe's maps of every row of x (recipe i with noise seed seeds[i]). Recipes whose passes for one
        image fit in one model call together (all guided, or none) share each chunk's call; a recipe with more
        passes per image than `batch_size` runs alone, its samples and path points looped over on the device.
        One transfer out per chunk of images. With `logits`, returns (maps, the model's logits of x from the
        passes of a recipe that sends x itself through the float32 model, or None when none does; explain_many
        predicts them then)."""
        import tensorflow as tf

        x, targets = np.asarray(x, np.float32), np.asarray(targets, np.int32)
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
            maps = _chunked(lambda xs, ts, ss: tuple(m.numpy() for m in fn(tf.constant(xs), tf.constant(ts),
                                                                        tf.constant(ss), baselines, sigmas)),
                            images_per_chunk, x, targets, seed_rows)
            for i, m in zip(group, maps):
                out[i] = m
            if len(maps) > len(group):
                seen_logits = maps[-1]
        if not logits:
            return out
        return out, seen_logits

    def maps(self, x: np.ndarray, targets: np.ndarray, recipe: Recipe, *, seed=0,
             batch_size: int = 256) -> np.ndarray:
        """The recipe's maps of every row of x."""
        return self.maps_many(x, targets, [recipe], [seed], batch_size)[0]

    def gradients(self, x: np.ndarray, targets: np.ndarray, *, output: str = "logit", guided: bool = False,
                  batch_size: int = 256) -> np.ndarray:
        """d f_c / d x for every row of x, in chunks of `batch_size` through one traced function."""
        return self.maps(x, targets, Recipe(output=output, guided=guided), batch_size=batch_size)

    def predict_logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        import tensorflow as tf

        key = ("logits", JIT_COMPILE)
        if key not in self._functions:
            model = self.model
            self._functions[key] = tf.function(lambda xs: model(xs, training=False),
                                               input_signature=self._signature[:1], jit_compile=JIT_COMPILE,
                                               autograph=False)
        fn = self._functions[key]
        return _chunked(lambda xs: (fn(tf.constant(xs)).numpy(),), batch_size, np.asarray(x, np.float32))[0]

    def conv_layer_names(self) -> list[str]:
        return conv_layer_names(self.model)

    def gradcam(self, x: np.ndarray, targets: np.ndarray, layer: str, *, output: str = "logit",
                batch_size: int = 256) -> np.ndarray:
        """Grad-CAM maps (N,H,W): ReLU(sum_k alpha_k A^k), alpha_k = mean_ij d f_c/d A^k_ij, bilinear upsampling."""
        import tensorflow as tf

        valid = self.conv_layer_names()
        if layer not in valid:
            raise SanityError(f"gradcam: layer '{layer}' is not a conv layer of {self.model.name}; "
                              f"valid layers: {', '.join(valid) or 'none (the model has no conv layer)'}")
        key = ("gradcam", layer, output, JIT_COMPILE)
        if key not in self._functions:
            cam_model = _activations_and_outputs(self.model, layer)
            height, width = self.model.input_shape[1:3]

            @tf.function(input_signature=self._signature, jit_compile=JIT_COMPILE, autograph=False)
            def cam_fn(x, targets):
                with tf.GradientTape() as tape:
                    activations, outputs = cam_model(x, training=False)
                    score = _select(outputs, targets, output)
                grads = tape.gradient(score, activations)
                alpha = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
                cam = tf.nn.relu(tf.reduce_sum(alpha * activations, axis=-1, keepdims=True))
                return tf.image.resize(cam, (height, width), method="bilinear")[..., 0]

            self._cam_models[layer] = cam_model
            self._functions[key] = cam_fn
        fn = self._functions[key]
        return _chunked(lambda xs, ts: (fn(tf.constant(xs), tf.constant(ts)).numpy(),), batch_size,
                        np.asarray(x, np.float32), np.asarray(targets, np.int32))[0]


def conv_layer_names(model) -> list[str]:
    """Top-level layers with a 4-D (batch, height, width, channels) output, in model order: valid GradCAM layers
    (the last is the default for your own model)."""
    import keras

    return [layer.name for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer) and len(getattr(layer, "output", None).shape
                                                                      if hasattr(layer, "output") else ()) == 4]


def _activations_and_outputs(model, layer: str):
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


def _chunked(call, chunk: int, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """call(*rows) on `chunk` rows of every array at a time; its outputs concatenated (float32)."""
    if chunk < 1:
        raise SanityError(f"batch_size must be >= 1, got {chunk}")
    parts = [call(*(a[i:i + chunk] for a in arrays)) for i in range(0, len(arrays[0]), chunk)]
    return tuple(np.concatenate(outs, axis=0).astype(np.float32, copy=False) for outs in zip(*parts))


def _fold(total: int, size: int, block: Callable, init: list, merge: Callable | None = None):
    """sum over start = 0, size, 2 size, ... < total of block(start, n) (n = size, the last n = the rest): a tuple
    of tensors; `merge(sums so far, block values, start, n)` may adjust a block's values first. Full blocks run in a tf.while_loop with Kahan-compensated float32 sums (the error does not grow
    with the number of blocks), so one traced graph serves any number of samples or path points; a shorter last
    block is one more static call."""
    import tensorflow as tf

    full, rest = divmod(total, size)
    if full == 1 and not rest:
        return block(0, size)
    sums, carries = list(init), [tf.zeros_like(v) for v in init]

    def add(sums, carries, start, n):
        values = block(start, n)
        if merge is not None:
            values = merge(sums, values, start, n)
        out_sums, out_carries = [], []
        for total_, carry, value in zip(sums, carries, values):
            y = value - carry
            t = total_ + y
            out_carries.append((t - total_) - y)
            out_sums.append(t)
        return out_sums, out_carries

    if full:
        def body(i, sums, carries):
            return (i + 1, *add(sums, carries, i * size, size))

        _, sums, carries = tf.while_loop(lambda i, *_: i < full, body, (tf.constant(0), sums, carries))
    if rest:
        sums, carries = add(sums, carries, full * size, rest)
    return tuple(sums)


def engine_for(model: keras.Model) -> GradientEngine:
    """The model's engine (its traced functions are reused across calls, stages and methods). It lives on the
    model itself, so both are freed together."""
    engine = model.__dict__.get("_sanity_engine")
    if engine is None:
        engine = GradientEngine(model)
        object.__setattr__(model, "_sanity_engine", engine)
    return engine
