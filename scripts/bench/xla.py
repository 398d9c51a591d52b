"""Workload (x): XLA on or off (config `jit_compile`): SmoothGrad-50 of the MNIST CNN and MLP through
methods.explain, each timed with the engine's functions compiled by XLA and without, in the same process."""

from __future__ import annotations

import numpy as np



def run(ctx):
    import keras

    from sanity_cli import architectures, methods

    n, samples = ctx.size["mnist_images"], ctx.size["samples"]
    params = {"base": "gradient", "samples": samples, "sigma": 0.15}
    for name in ("mnist_cnn", "mnist_mlp"):
        keras.utils.set_random_seed(0)
        model = architectures.get(name).build()
        images = np.random.default_rng(0).random((n, 28, 28, 1), dtype=np.float32)
        targets = np.arange(n, dtype=np.int32) % 10
        workload, medians, maps = f"x_xla_smoothgrad{samples}_{name}", {}, {}
        for jit in (False, True):
            options = methods.EngineOptions(jit_compile=jit, batch_size=256)
            maps[jit] = methods.explain(model, images, targets, "smoothgrad", params, options)  # trace
            system = f"sanity methods.explain, jit_compile={str(jit).lower()}"
            ctx.time_system(workload, system, "info", lambda: methods.explain(
                model, images, targets, "smoothgrad", params, options), n)
            medians[jit] = ctx.rows[-1].wall_s_median
        scale = np.abs(maps[False]).reshape(n, -1).max(axis=1).reshape(n, 1, 1, 1)
        change = float(np.max(np.abs(maps[True] - maps[False]) / np.where(scale > 0, scale, 1.0)))
        ctx.rows[-1].note = (f"XLA / plain = {medians[True] / medians[False]:.2f}; largest relative map "
                             f"difference {change:.1e}")
        ctx.facts[f"xla_{name}"] = medians[True] / medians[False]
        ctx.log(f"xla       {name}: XLA / plain {medians[True] / medians[False]:.2f}, maps within {change:.1e}")
