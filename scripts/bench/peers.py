"""Ours and the peers on the same settings: sanity's explain call, PAIR `saliency` (SmoothGrad, IG), Quantus'
MPRT with gradient / SmoothGrad explainers, and the per-pair scipy / scikit-image metric loop."""

from __future__ import annotations

from unittest import mock

import numpy as np

from .measure import CheckFailed, grad_function

SIGMA = 0.15


def importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:  # noqa: BLE001 (a broken peer install counts as absent)
        return False


def version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


# --------------------------------------------------------------------------- ours

def ours_explain(model, images, targets, kind: str, params: dict, batch: int) -> np.ndarray:
    from sanity_cli import methods

    return methods.explain(model, images, targets, kind, params, methods.EngineOptions(batch_size=batch), seed=0)


def smoothgrad_params(samples: int) -> dict:
    return {"base": "gradient", "samples": samples, "sigma": SIGMA, "base_params": {}}


def ig_params(steps: int, black: float, rule: str = "midpoint") -> dict:
    return {"steps": steps, "baseline": black, "rule": rule, "output": "logit"}


# --------------------------------------------------------------------------- PAIR saliency

def pair_call_model_function(model, compiled: bool):
    """PAIR's call_model_function contract: (x_batch, call_model_args, expected_keys) -> {INPUT_OUTPUT_GRADIENTS}.
    compiled=False is the eager GradientTape of PAIR's own TF2 examples; compiled=True routes it through one
    traced tf.function (the most favourable setting for the peer)."""
    import tensorflow as tf
    from saliency.core.base import INPUT_OUTPUT_GRADIENTS

    grad = grad_function(model) if compiled else None

    def call_model_function(x_batch, call_model_args=None, expected_keys=None):
        target = int(call_model_args["target"])
        x = tf.convert_to_tensor(np.asarray(x_batch, np.float32))
        if compiled:
            g = grad(x, tf.fill([len(x_batch)], target))
        else:
            with tf.GradientTape() as tape:
                tape.watch(x)
                score = model(x)[:, target]
            g = tape.gradient(score, x)
        return {INPUT_OUTPUT_GRADIENTS: g.numpy()}

    return call_model_function


def pair_smoothgrad(images, targets, cmf, samples: int, same_noise_seed=None) -> np.ndarray:
    """PAIR GradientSaliency.GetSmoothedMask per image (its only mode: one batch-1 call per sample), plain mean
    (magnitude=False, i.e. SmoothGrad of the gradient as in the paper). With same_noise_seed, numpy.random.normal
    is fed sanity's per-image noise (methods.noise.unit_noise) so both see the same noisy inputs."""
    import saliency.core as saliency

    method = saliency.GradientSaliency()
    unit = None
    if same_noise_seed is not None:
        from sanity_cli.methods.noise import image_seeds, unit_noise

        unit = unit_noise(image_seeds(same_noise_seed, len(images)), samples, images.shape[1:])
    out = []
    for i, (x, t) in enumerate(zip(images, targets)):
        kwargs = dict(stdev_spread=SIGMA, nsamples=samples, magnitude=False)
        if unit is None:
            out.append(method.GetSmoothedMask(x, cmf, {"target": int(t)}, **kwargs))
            continue
        draws = iter(unit[i])
        # sanity's noise for this image, in sample order, scaled in float32 exactly as the engine scales it
        # (PAIR's own scale, stdev_spread * (max - min), is the same number rounded differently)
        scale32 = np.float32(SIGMA) * (np.float32(x.max()) - np.float32(x.min()))

        def normal(loc=0.0, scale=1.0, size=None, _draws=draws, _scale=scale32):
            return (np.float32(loc) + next(_draws) * _scale).astype(np.float32)

        with mock.patch("numpy.random.normal", normal):
            out.append(method.GetSmoothedMask(x, cmf, {"target": int(t)}, **kwargs))
    return np.stack(out).astype(np.float32)


def pair_ig(images, targets, cmf, steps: int, black: float, batch_size: int = 1) -> np.ndarray:
    """PAIR IntegratedGradients.GetMask per image: x_steps points linspace(0, 1, steps), equal weights 1/steps,
    batch_size=1 by default (its batching option: up to batch_size path points per call)."""
    import saliency.core as saliency

    method = saliency.IntegratedGradients()
    return np.stack([method.GetMask(x, cmf, {"target": int(t)}, x_baseline=np.full_like(x, black),
                                    x_steps=steps, batch_size=batch_size)
                     for x, t in zip(images, targets)]).astype(np.float32)


def pair_ig_from_ours(model, images, targets, steps: int, black: float, batch: int) -> np.ndarray:
    """PAIR's IG rebuilt exactly from sanity's trapezoid IG (same points a_k = k/(S-1)):
    PAIR = d/S sum_k g_k, trapezoid T = d/(S-1) (sum_k g_k - (g_0 + g_{S-1})/2)
    => PAIR = (S-1)/S T + d (g_0 + g_{S-1}) / (2S), with g_0 at the baseline and g_{S-1} at the image."""
    trap = ours_explain(model, images, targets, "integrated_gradients", ig_params(steps, black, "trapezoid"), batch)
    baseline = np.full_like(images, black)
    g_end = ours_explain(model, images, targets, "gradient", {}, batch)
    g_base = ours_explain(model, baseline, targets, "gradient", {}, batch)
    delta = images - baseline
    return ((steps - 1) / steps * trap + delta * (g_base + g_end) / (2 * steps)).astype(np.float32)


# --------------------------------------------------------------------------- Quantus MPRT

def quantus_gradient(model, inputs, targets, **kwargs):
    """Quantus explain_func: d logit_target / d x in an eager GradientTape. Quantus hands channel-first inputs to
    explain_func for its randomized copies (the original model gets them in the model's layout): accept both and
    answer in the layout received."""
    import tensorflow as tf

    inputs = np.asarray(inputs, np.float32)
    moved = inputs.shape[1:] != tuple(model.input_shape[1:])
    x = tf.convert_to_tensor(np.moveaxis(inputs, 1, -1) if moved else inputs)
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = tf.gather(model(x, training=False), np.asarray(targets, np.int32), axis=1, batch_dims=1)
    grads = tape.gradient(score, x).numpy()
    return np.moveaxis(grads, -1, 1) if moved else grads


def quantus_smoothgrad(samples: int, rng: np.random.Generator):
    """Quantus explain_func: SmoothGrad of quantus_gradient, noise sigma = SIGMA x each input's value span, drawn
    from rng (one stream across all calls)."""

    def explain(model, inputs, targets, **kwargs):
        inputs = np.asarray(inputs, np.float32)
        span = (inputs.reshape(len(inputs), -1).max(1) - inputs.reshape(len(inputs), -1).min(1))
        scale = (SIGMA * span).reshape(-1, 1, 1, 1)
        total = 0.0
        for _ in range(samples):
            noisy = inputs + (scale * rng.standard_normal(inputs.shape)).astype(np.float32)
            total = total + quantus_gradient(model, noisy, targets)
        return total / samples

    return explain


def quantus_mprt(model, x, y, explain_func, order: str = "top_down") -> dict:
    """Quantus' cascading MPRT (top-down, or bottom-up): {layer name: Spearman per image}."""
    import quantus

    metric = quantus.MPRT(layer_order=order, seed=42, abs=True, normalise=True,
                          disable_warnings=True, display_progressbar=False)
    return metric(model=model, x_batch=x, y_batch=y, a_batch=None, channel_first=False,
                  explain_func=explain_func, explain_func_kwargs={}, batch_size=64)


def check_quantus(model, x, y, q_scores, log, order: str = "top_down") -> list[str]:
    """Recompute Quantus' per-layer scores on the very model states its generator yields (same seeds) with
    sanity's engine and rank correlation; also report whether those states keep the trained weights of the
    layers not yet randomized (cascading MPRT requires it)."""
    import keras
    from quantus.helpers.model.tf_model import TensorFlowModel
    from sanity_cli import metrics

    wrapped = TensorFlowModel(model=model, channel_first=False, softmax=False, model_predict_kwargs={})
    reference = ours_explain(model, x, y, "gradient", {}, 256)
    worst, layers, finding = 0.0, 0, ""
    keras.utils.set_random_seed(1234)
    for layer_name, random_model in wrapped.get_random_layer_generator(order=order, seed=42):
        if layers == 0:
            kept = [np.array_equal(a.numpy(), b.numpy()) for layer in model.layers if layer.name != layer_name
                    for a, b in zip(layer.weights, random_model.get_layer(layer.name).weights)
                    if len(a.shape) > 1]
            if not all(kept):
                finding = (f"PEER DEFECT (reported, not fatal): quantus {version('quantus')} MPRT on a Keras "
                           f"model randomizes a clone_model() copy that does not carry the trained weights: at "
                           f"its first stage ('{layer_name}' permuted) {kept.count(False)} of {len(kept)} kernels "
                           f"of the other layers are freshly initialized, so every Quantus stage explains an "
                           f"essentially random model (sanity restores and re-initializes the trained weights "
                           f"block by block). Timing is unaffected.")
        maps = ours_explain(random_model, x, y, "gradient", {}, 256)
        ours, _ = metrics._spearman(np.abs(reference).sum(-1), np.abs(maps).sum(-1))  # noqa: SLF001
        theirs = np.asarray(q_scores[layer_name], np.float64)
        if ours.shape != theirs.shape:
            raise CheckFailed(f"quantus MPRT layer {layer_name}: {theirs.shape} scores vs ours {ours.shape}")
        worst = max(worst, float(np.nanmax(np.abs(ours - theirs))))
        layers += 1
    line = (f"quantus MPRT ({order}) Spearman per image and layer ({layers} layers x {len(x)} images) vs sanity engine "
            f"gradients + metrics rank correlation on the same randomized models: max diff {worst:.2e} (<= 1e-3)")
    if not worst <= 1e-3:
        raise CheckFailed(line)
    log(f"check ok  {line}")
    if finding:
        log(finding)
    return [line] + ([finding] if finding else [])


# --------------------------------------------------------------------------- Quantus efficient MPRT

def ours_as_explain_func(batch: int = 256):
    """Quantus explain_func that returns sanity's own gradient maps (methods.explain) in the layout received, so
    that Quantus and sanity score the very same explanations."""

    def explain(model, inputs, targets, **kwargs):
        inputs = np.asarray(inputs, np.float32)
        moved = inputs.shape[1:] != tuple(model.input_shape[1:])
        maps = ours_explain(model, np.moveaxis(inputs, 1, -1) if moved else inputs, np.asarray(targets), "gradient",
                            {}, batch)
        return np.moveaxis(maps, -1, 1) if moved else maps

    return explain


def check_quantus_efficient_mprt(model, x, y, log) -> list[str]:
    """Quantus 0.6's EfficientMPRT (bottom-up, its defaults: raw values, 100-bin discrete entropy) against
    sanity's `entropy_rise` on the same explanations: both score the trained model's and Quantus' fully
    randomized model's gradient maps, made by sanity's engine; the scores must agree to 1e-9."""
    import keras
    import quantus
    from quantus.helpers.model.tf_model import TensorFlowModel
    from sanity_cli import metrics

    explain = ours_as_explain_func()
    keras.utils.set_random_seed(1234)  # Quantus' clone_model draws fresh weights: the same ones for both passes
    metric = quantus.EfficientMPRT(layer_order="bottom_up", seed=42, disable_warnings=True,
                                   display_progressbar=False)
    # channel_first=None: with False, Quantus 0.6 feeds its channel-first copy of x to a channel-last Keras model
    theirs = np.asarray(metric(model=model, x_batch=x, y_batch=y, a_batch=None, channel_first=None,
                               explain_func=explain, explain_func_kwargs={}, batch_size=64), np.float64)
    keras.utils.set_random_seed(1234)
    wrapped = TensorFlowModel(model=model, channel_first=False, softmax=False, model_predict_kwargs={})
    for _, randomized in wrapped.get_random_layer_generator(order="bottom_up", seed=42):
        pass  # the last state: every layer randomized
    ours, _ = metrics.compare(explain(model, x, y), explain(randomized, x, y), "entropy_rise")
    return _same_scores(f"quantus EfficientMPRT score per image ({len(x)} images, gradient maps from sanity's "
                        f"engine) vs sanity metric entropy_rise on the same maps", ours, theirs, log)


def _same_scores(what: str, ours: np.ndarray, theirs: np.ndarray, log, tolerance: float = 1e-9) -> list[str]:
    """The check line for two per-image score arrays that must agree to `tolerance`; CheckFailed if not."""
    worst = float(np.max(np.abs(ours - theirs)))
    line = f"{what}: max diff {worst:.2e} (<= {tolerance:g}); mean {ours.mean():+.4f} vs {theirs.mean():+.4f}"
    if not worst <= tolerance:
        raise CheckFailed(line)
    log(f"check ok  {line}")
    return [line]


def check_quantus_random_logit(model, x, y, log) -> list[str]:
    """Quantus 0.6's RandomLogit (Spearman of |maps|, no normalisation) against sanity's spearman_abs with a
    rank-preserving normalisation (second_moment: |a| / sqrt(mean |a|^2), no clipping) on the same explanations:
    sanity's gradient maps of the explained class and of the other class Quantus draws (recorded from its calls).
    The scores must agree to 1e-9. (Quantus draws the other class with its own seeded generator, so the classes,
    not our `other_classes`, are taken from its calls.)"""
    import quantus
    from sanity_cli import metrics

    asked = []
    ours_fn = ours_as_explain_func()

    def explain(model, inputs, targets, **kwargs):
        asked.append(np.asarray(targets).copy())
        return ours_fn(model, inputs, targets)

    metric = quantus.RandomLogit(num_classes=int(model.output_shape[-1]), seed=42, abs=True, normalise=False,
                                 similarity_func=quantus.similarity_func.correlation_spearman,
                                 disable_warnings=True, display_progressbar=False)
    theirs = np.asarray(metric(model=model, x_batch=x, y_batch=y, a_batch=None, channel_first=None,
                               explain_func=explain, explain_func_kwargs={}, batch_size=len(x)), np.float64)
    other = asked[-1]
    if np.any(other == y):
        raise CheckFailed("quantus RandomLogit explained the explained class itself")
    ours, _ = metrics.compare(explain(model, x, y), explain(model, x, other), "spearman_abs",
                              normalisation="second_moment")
    return _same_scores(f"quantus RandomLogit Spearman per image ({len(x)} images, its other classes, gradient maps "
                        f"from sanity's engine) vs sanity spearman_abs (second_moment) on the same maps", ours, theirs,
                        log)


# --------------------------------------------------------------------------- the per-pair metric loop

def per_pair_metrics(a: np.ndarray, b: np.ndarray, which=None) -> dict[str, np.ndarray]:
    """What a user writes without sanity: for each map pair, normalise (the paper's visualisation functions),
    then scipy.stats.spearmanr, skimage.metrics.structural_similarity, skimage.feature.hog + scipy.stats.pearsonr."""
    from scipy import stats
    from skimage.feature import hog
    from skimage.metrics import structural_similarity

    which = which or ["spearman_abs", "spearman", "ssim", "hog_pearson", "hog_spearman"]

    def absolute(m):
        m = np.abs(m).sum(-1)
        vmax, vmin = np.percentile(m, 99), m.min()
        return np.clip((m - vmin) / (vmax - vmin), 0, 1) if vmax > vmin else np.zeros_like(m)

    def diverging(m):
        m = m.sum(-1)
        span = np.percentile(np.abs(m), 99)
        return np.clip(m / span, -1, 1) if span > 0 else np.zeros_like(m)

    def spearman(x, y):
        if x.std() == 0 or y.std() == 0:
            return np.nan
        return stats.spearmanr(x.ravel(), y.ravel())[0]

    def hog_pearson(x, y):
        fx, fy = (hog(z, orientations=9, pixels_per_cell=(4, 4), cells_per_block=(2, 2)) for z in (x, y))
        return stats.pearsonr(fx, fy)[0] if fx.std() > 0 and fy.std() > 0 else np.nan

    def hog_spearman(x, y):
        fx, fy = (hog(z, orientations=9, pixels_per_cell=(4, 4), cells_per_block=(2, 2)) for z in (x, y))
        return stats.spearmanr(fx, fy)[0] if fx.std() > 0 and fy.std() > 0 else np.nan

    out = {m: np.empty(len(a)) for m in which}
    for i in range(len(a)):
        na = nb = None
        if {"spearman_abs", "ssim", "hog_pearson", "hog_spearman"} & set(which):
            na, nb = absolute(a[i]).astype(np.float32), absolute(b[i]).astype(np.float32)
        if "spearman_abs" in which:
            out["spearman_abs"][i] = spearman(na, nb)
        if "spearman" in which:
            out["spearman"][i] = spearman(diverging(a[i]).astype(np.float32), diverging(b[i]).astype(np.float32))
        if "ssim" in which:
            out["ssim"][i] = structural_similarity(na.astype(np.float64), nb.astype(np.float64), data_range=1.0)
        if "hog_pearson" in which:
            out["hog_pearson"][i] = hog_pearson(na.astype(np.float64), nb.astype(np.float64))
        if "hog_spearman" in which:
            out["hog_spearman"][i] = hog_spearman(na.astype(np.float64), nb.astype(np.float64))
    return out
