"""The traced function of a group of gradient recipes (engine.Recipe): noise, path points, forward+backward passes
and per-image sums, all on the device, as module functions with explicit arguments (the graph builder of
GradientEngine.maps_many). TensorFlow is imported by the functions, which run only while tracing."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from .noise import noise_block


@dataclass(frozen=True)
class Graph:
    """What every part of the traced function needs: the model the passes run through, the input shape and the
    precision of the passes."""

    model: object
    shape: tuple
    precision: str

    @property
    def ones(self) -> list[int]:
        return [1] * len(self.shape)


def select(outputs, targets, output: str):
    """The explained score per row: the target class's logit, or its softmax probability."""
    import tensorflow as tf

    outputs = tf.cast(outputs, tf.float32)  # a mixed-precision model's float16 logits
    if output == "probability":
        outputs = tf.nn.softmax(outputs, axis=-1)
    return tf.gather(outputs, targets, axis=1, batch_dims=1)


def repeat_rows(values, times: int):
    """Each entry `times` times in a row (tf.repeat's result, in far fewer graph ops)."""
    import tensorflow as tf

    return values if times == 1 else tf.reshape(tf.tile(values[:, None], [1, times]), [-1])


def score_of(logits, targets, outputs):
    """Each span of rows' own score (`outputs`: (start, stop, output) per recipe)."""
    import tensorflow as tf

    if len({output for _, _, output in outputs}) == 1:  # one kind of score for every row
        return select(logits, targets, outputs[0][2])
    return tf.concat([select(logits[start:stop], targets[start:stop], output)
                      for start, stop, output in outputs], axis=0)


def gradients(graph: Graph, points, targets, outputs):
    """(d f_c / d z for every point, the logits). In half precision, d score / d logits is taken in float32 and
    scaled to a largest entry of 1 per row before it enters the 16-bit network (a softmax probability's gradient,
    p_c (1[j = c] - p_j), underflows float16 once the logit gap passes ~17), the scale multiplied back after."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(points)
        logits = graph.model(points, training=False)
        if graph.precision == "float32":
            score = score_of(logits, targets, outputs)
    if graph.precision == "float32":
        return tape.gradient(score, points), logits
    held = tf.stop_gradient(tf.cast(logits, tf.float32))
    with tf.GradientTape() as inner:
        inner.watch(held)
        score = score_of(held, targets, outputs)
    upstream = inner.gradient(score, held)
    scale = tf.reduce_max(tf.abs(upstream), axis=1, keepdims=True)
    scale = tf.where(scale > 0, scale, tf.ones_like(scale))
    grads = tape.gradient(logits, points, output_gradients=tf.cast(upstream / scale, logits.dtype))
    return grads * tf.reshape(scale, [-1, *graph.ones]), logits


def noisy(graph: Graph, recipe, x, seeds, sigma, first=0, count=None):
    """x + eps_s for samples first..first+count-1: (B, count, *shape) (only those samples' noise is drawn); x
    itself (B, 1, *shape) without noise."""
    import tensorflow as tf

    if not recipe.samples:
        return x[:, None]
    count = recipe.samples if count is None else count
    axes = list(range(1, len(graph.shape) + 1))
    span = tf.reduce_max(x, axis=axes) - tf.reduce_min(x, axis=axes)
    unit = tf.map_fn(lambda s: noise_block(s, recipe.samples, first, count, list(graph.shape)), seeds,
                     fn_output_signature=tf.float32)
    return x[:, None] + unit * tf.reshape(sigma * span, [-1, 1, *graph.ones])


def block_points(graph: Graph, recipe, xs, baseline, first, n):
    """The model inputs of path points first..first+n of every sample: (B, samples, n, *shape)."""
    import tensorflow as tf

    if not recipe.path:
        return xs[:, :, None]
    a = tf.reshape(tf.slice(tf.constant(recipe.alphas, tf.float32), [first], [n]), [1, 1, n, *graph.ones])
    return baseline + a * (xs - baseline)[:, :, None]


def step_sum(graph: Graph, recipe, g, first, n):
    """sum_k w_k g_k over the block's path points: (B, samples, *shape)."""
    import tensorflow as tf

    if not recipe.path:
        return g[:, :, 0]
    w = tf.reshape(tf.slice(tf.constant(recipe.weights, tf.float32), [first], [n]), [1, 1, n, *graph.ones])
    return tf.reduce_sum(w * g, axis=2)


def sample_map(recipe, xs, baseline, summed):
    """E(x + eps_s) from its summed gradients: times x - x' (IG), times the input (Gradient ⊙ Input)."""
    if recipe.path:
        return (xs - baseline) * summed
    return xs * summed if recipe.times_input else summed


def moments(recipe, e):
    """The block's sum over its samples, and with `variance` its squared deviations from its own mean (no float32
    cancellation; blocks merge by Chan et al.'s update)."""
    import tensorflow as tf

    total = tf.reduce_sum(e, axis=1)
    if not recipe.variance:
        return (total,)
    return total, tf.reduce_sum(tf.square(e - total[:, None] / tf.cast(tf.shape(e)[1], tf.float32)), 1)


def finish(recipe, sums):
    n = max(recipe.samples, 1)
    return sums[1] / n if recipe.variance else sums[0] / n


def together(graph: Graph, recipes, clean: int | None, x, targets, seeds, baselines, sigmas):
    """Every recipe's points of the chunk in one model call; after the maps, the logits of x when recipe `clean`
    passes x itself through the float32 model (engine.clean_logits)."""
    import tensorflow as tf

    points, per_point, outputs, noisy_inputs, start = [], [], [], [], 0
    for r, recipe in enumerate(recipes):
        xs = noisy(graph, recipe, x, seeds[:, r], sigmas[r])
        z = block_points(graph, recipe, xs, baselines[r], 0, len(recipe.alphas))
        noisy_inputs.append((xs, tf.shape(z)))
        points.append(tf.reshape(z, [-1, *graph.shape]))
        per_point.append(repeat_rows(targets, recipe.passes))
        outputs.append((start, start + tf.shape(points[-1])[0], recipe.output))
        start = outputs[-1][1]
    grads, logits = gradients(graph, tf.concat(points, 0), tf.concat(per_point, 0), outputs)
    maps = []
    for r, (recipe, (xs, z_shape), (first, stop, _)) in enumerate(zip(recipes, noisy_inputs, outputs)):
        g = tf.reshape(grads[first:stop], z_shape)
        e = sample_map(recipe, xs, baselines[r], step_sum(graph, recipe, g, 0, len(recipe.alphas)))
        maps.append(finish(recipe, moments(recipe, e)))
    if clean is not None:
        maps.append(tf.cast(logits[outputs[clean][0]:outputs[clean][1]], tf.float32))
    return tuple(maps)


def chan_merge(recipe, sums, values, before, n):
    """Chan et al.: M2 = M2_a + M2_b + (mean_b - mean_a)^2 n_a n_b / (n_a + n_b) (VarGrad across blocks)."""
    import tensorflow as tf

    if not recipe.variance:
        return values
    before = tf.cast(before, tf.float32)
    gap = values[0] / n - sums[0] / tf.maximum(before, 1.0)
    return values[0], values[1] + tf.square(gap) * (before * n / (before + n))


def looped(graph: Graph, recipe, sample_block: int, step_block: int, x, targets, seeds, baselines, sigmas):
    """One recipe, its samples and path points in blocks (while loops, Kahan-compensated sums)."""
    import tensorflow as tf

    baseline, steps = baselines[0], len(recipe.alphas)

    def sample_sums(first, n):
        xs = noisy(graph, recipe, x, seeds[:, 0], sigmas[0], first, n)
        per_point = repeat_rows(targets, n)

        def step_block_sum(k, m):
            z = block_points(graph, recipe, xs, baseline, k, m)
            g, _ = gradients(graph, tf.reshape(z, [-1, *graph.shape]), repeat_rows(per_point, m),
                             [(0, None, recipe.output)])
            return (step_sum(graph, recipe, tf.reshape(g, tf.shape(z)), k, m),)

        summed = fold(steps, step_block, step_block_sum, [tf.zeros_like(xs)])[0]
        return moments(recipe, sample_map(recipe, xs, baseline, summed))

    zero = tf.zeros_like(x)
    sums = fold(max(recipe.samples, 1), sample_block, sample_sums, [zero, zero] if recipe.variance else [zero],
                lambda sums, values, before, n: chan_merge(recipe, sums, values, before, n))
    return (finish(recipe, sums),)


def maps_function(graph: Graph, recipes: tuple, sample_block: int, step_block: int, clean: int | None,
                  relu_rule: str, jit_compile: bool, signature):
    """The traced function of a group of recipes sharing each chunk's model calls: fn(x, targets, seeds (B, R, 2),
    baselines (R, 1, *shape), sigmas (R,)) -> one map per recipe, then the logits of x when `clean` names a recipe.
    Several recipes (their passes for one image fit in one call together) send all their points through one
    forward+backward pass; a single recipe loops over blocks of `sample_block` samples x `step_block` points."""
    import tensorflow as tf

    from .relu import swapped_relus

    one_pass = len(recipes) > 1 or (sample_block, step_block) == (max(recipes[0].samples, 1), len(recipes[0].alphas))

    @tf.function(input_signature=(*signature, tf.TensorSpec([None, len(recipes), 2], tf.int32),
                                  tf.TensorSpec([len(recipes), 1, *graph.shape], tf.float32),
                                  tf.TensorSpec([len(recipes)], tf.float32)),
                 jit_compile=jit_compile, autograph=False)
    def maps_fn(x, targets, seeds, baselines, sigmas):
        with swapped_relus(graph.model, relu_rule) if relu_rule != "gradient" else contextlib.nullcontext():
            if one_pass:
                return together(graph, recipes, clean, x, targets, seeds, baselines, sigmas)
            return looped(graph, recipes[0], sample_block, step_block, x, targets, seeds, baselines, sigmas)

    return maps_fn


def fold(total: int, size: int, block, init: list, merge=None):
    """sum over start = 0, size, 2 size, ... < total of block(start, n) (n = size, the last n = the rest): a tuple
    of tensors; `merge(sums so far, block values, start, n)` may adjust a block's values first. Full blocks run in a
    tf.while_loop with Kahan-compensated float32 sums (the error does not grow with the number of blocks), so one
    traced graph serves any number of samples or path points; a shorter last block is one more static call."""
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
