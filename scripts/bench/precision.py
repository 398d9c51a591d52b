"""Workload (p): mixed precision (config `precision`): SmoothGrad of the MNIST CNN through methods.explain at
float32, mixed_float16 and mixed_bfloat16 in the same process, each timed, and each half-precision map's error
against float32: the largest difference relative to the map's largest value, and the mean Spearman rank
correlation of |maps| (the paper's similarity)."""

from __future__ import annotations

import numpy as np

from sanity_cli import metrics


def run(ctx):
    import keras

    from sanity_cli import architectures, methods
    from sanity_cli.methods.options import PRECISIONS

    n, samples = ctx.size["mnist_images"], ctx.size["samples"]
    params = {"base": "gradient", "samples": samples, "sigma": 0.15}
    keras.utils.set_random_seed(0)
    model = architectures.get("mnist_cnn").build()
    images = np.random.default_rng(0).random((n, 28, 28, 1), dtype=np.float32)
    targets = np.arange(n, dtype=np.int32) % 10
    workload, medians, maps = f"p_precision_smoothgrad{samples}_mnist_cnn", {}, {}
    for precision in PRECISIONS:
        options = methods.EngineOptions(precision=precision, batch_size=256)
        maps[precision] = methods.explain(model, images, targets, "smoothgrad", params, options)  # trace
        ctx.time_system(workload, f"sanity methods.explain, precision={precision}", "info", lambda: methods.explain(
            model, images, targets, "smoothgrad", params, options), n)
        medians[precision] = ctx.rows[-1].wall_s_median
        if precision == "float32":
            continue
        reference = maps["float32"]
        scale = np.abs(reference).reshape(n, -1).max(axis=1).reshape(n, 1, 1, 1)
        error = float(np.max(np.abs(maps[precision] - reference) / np.where(scale > 0, scale, 1.0)))
        rank = float(np.nanmean(metrics.compare(reference, maps[precision], "spearman_abs")[0]))
        ratio = medians[precision] / medians["float32"]
        ctx.rows[-1].note = (f"time / float32 = {ratio:.2f}; largest map error {error:.1e} of the map's "
                             f"largest value; mean Spearman of |maps| with float32 {rank:.4f}")
        ctx.facts[f"precision_{precision}"] = ratio
        ctx.log(f"precision {precision}: time / float32 {ratio:.2f}, largest error {error:.1e}, "
                f"Spearman {rank:.4f}")
