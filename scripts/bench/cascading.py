"""Workload (c): a full cascading run of the MNIST CNN (gradient + SmoothGrad over all stages): the limit,
sanity's plans.compare_all (the run's explain -> randomize -> compare), and Quantus' MPRT (its scores checked
against ours before timing)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from sanity_cli import architectures

from .peers import (check_quantus, check_quantus_efficient_mprt, check_quantus_random_logit, quantus_gradient,
                    quantus_mprt, quantus_smoothgrad)
from .table import missing_row


def run(ctx):
    from sanity_cli import core, models
    from sanity_cli.spec import parse

    s = ctx.size
    n, samples = s["casc_images"], s["casc_samples"]
    _, dataset, trained = ctx.mnist()
    model = trained.model
    grad, best, _ = ctx.best.get("mnist_cnn") or ctx.limit("mnist_cnn", model, s["mnist_batches"])
    spec = parse(ctx.cfg("method=[gradient,smoothgrad_gradient]", "metric=[spearman_abs]", f"n_images={n}",
                         f"method.smoothgrad_gradient.samples={samples}", f"batch_size={best}"))
    ids = core.choose_images(dataset, n, spec.seed)
    images = architectures.get("mnist_cnn").to_model_space(dataset.x_test[ids])
    targets = core.choose_targets(spec, model, images, dataset.y_test[ids])
    runs = core.applicable_methods(spec, model, lambda *_: None)
    stages = 1 + len(models.layer_blocks(model))
    wl = f"c_cascading_mnist_cnn_{n}img_grad+sg{samples}"
    passes = stages * n * (1 + samples)

    def ours():
        return cascading_table(spec, trained, runs, images, targets, ids, ctx.tmp)

    ctx.time_limit(wl, grad, model, passes, best, n, item="image (all stages)")
    table = ctx.time_system(wl, "sanity: plans.compare_all", "ours", ours, n, batch=best,
                            item="image (all stages)",
                            note=f"{stages} stages (trained + {stages - 1} blocks), gradient + smoothgrad_gradient,"
                                 " spearman_abs, re-init randomization")
    parts = cascading_breakdown(spec, trained, runs, images, targets, grad, n * (1 + samples), best,
                                ctx.size["repeats"])
    ours_row = next(r for r in reversed(ctx.rows) if r.workload == wl and r.role == "ours")
    ours_row.note += (f"; its parts timed apart on one thread (median of {ctx.size['repeats']}): explaining the "
                      f"{stages} stages {parts['explain']:.3f} s, re-initialising the blocks {parts['reinit']:.3f} s, "
                      f"comparing the stages {parts['compare']:.3f} s; the limit stage by stage (each stage's "
                      f"{n * (1 + samples)} passes in calls of at most {best}) {parts['stage_limit']:.3f} s")
    ctx.log(f"parts     {wl}: " + ", ".join(f"{k} {v:.3f} s" for k, v in parts.items()))
    last = table[table["stage"] == stages - 1].groupby("method")["value"].mean()
    if not ctx.has_quantus:
        ctx.rows.append(missing_row(wl, "quantus MPRT", "not installed"))
        return
    import keras

    q_smoothgrad = quantus_smoothgrad(samples, np.random.default_rng(0))

    # check: Quantus' per-layer scores == our engine's gradients on Quantus' randomized models + our rank
    # correlation (the same statistic on the same model states)
    keras.utils.set_random_seed(1234)  # Quantus' clone_model draws fresh weights: make them reproducible
    q_scores = quantus_mprt(model, images, targets, quantus_gradient)
    ctx.checks.extend(check_quantus(model, images, targets, q_scores, ctx.log))
    keras.utils.set_random_seed(1234)
    q_bottom_up = quantus_mprt(model, images, targets, quantus_gradient, order="bottom_up")
    ctx.checks.extend(check_quantus(model, images, targets, q_bottom_up, ctx.log, order="bottom_up"))
    ctx.checks.extend(check_quantus_efficient_mprt(model, images, targets, ctx.log))
    ctx.checks.extend(check_quantus_random_logit(model, images, targets, ctx.log))

    def theirs():
        return {"gradient": quantus_mprt(model, images, targets, quantus_gradient),
                "smoothgrad_gradient": quantus_mprt(model, images, targets, q_smoothgrad)}

    result = ctx.time_system(wl, "quantus MPRT (top_down) x2 explainers", "peer", theirs, n, batch=64,
                             item="image (all stages)",
                             note="gradient + SmoothGrad explain_func (eager GradientTape, batched by Quantus' "
                                  "batch_size=64), Spearman of |maps|, randomization by permuting weights")
    q_last = {k: float(np.nanmean(list(v.values())[-1])) for k, v in result.items()}
    ctx.checks.append(f"(c) statistics at full randomization: mean Spearman gradient / smoothgrad: sanity "
                      f"(spearman_abs, re-init) {last.get('gradient', float('nan')):.3f} / "
                      f"{last.get('smoothgrad_gradient', float('nan')):.3f}; Quantus MPRT (permutation) "
                      f"{q_last['gradient']:.3f} / {q_last['smoothgrad_gradient']:.3f} (reported, not compared: "
                      f"the randomization schemes differ)")


def cascading_table(spec, trained, runs, images, targets, image_ids, tmp: Path):
    """sanity's real cascading loop, plans.compare_all, returning its metrics table. Each call
    gets a fresh, empty unit store, so no stage is ever skipped as already done; its saving cost is part of the
    measured time (the self-check's logits come from the gradient passes here)."""
    from sanity_cli import plans
    from sanity_cli.checks import SelfChecks
    from sanity_cli.rundir import config_fingerprint
    from sanity_cli.units import UnitStore

    run_dir = Path(tempfile.mkdtemp(prefix="cascading_", dir=tmp))
    units = UnitStore(run_dir, config_fingerprint(spec.config), log=lambda *_: None)
    units.open()
    try:
        return plans.compare_all(spec, trained.model, runs, images, targets, image_ids, units,
                                 SelfChecks(lambda *_: None)).table(spec.model_name, spec.test.name)
    finally:
        units.wait()  # the last stage's unit may still be being written on the worker thread
        units.run_dir.remove_units()
        units.release()


def cascading_breakdown(spec, trained, runs, images, targets, grad, stage_passes: int, batch: int,
                        repeats: int) -> dict:
    """Where a cascading run's time goes, each part timed on its own on the main thread (the run itself overlaps
    the comparison with the next stage's passes): explaining every stage, re-initialising the blocks, comparing
    every stage with the reference, and the limit's passes made stage by stage, in calls of at most `batch` (a
    stage's passes cannot share a call with the next stage's: the weights differ)."""
    import statistics
    import time

    from sanity_cli import plans, randomize
    from sanity_cli.checks import SelfChecks
    from sanity_cli.stages import compare_stage

    from .measure import limit_runner

    model = trained.model
    blocks = spec.arch.blocks(model)
    stages = plans.plan_stages(spec, blocks)
    context = plans.Context(spec, model, None, list(runs), images, targets, SelfChecks(lambda *_: None),
                            lambda *_: None)
    trained_weights = randomize.snapshot(model)
    per_stage = limit_runner(grad, model.input_shape[1:], stage_passes, min(stage_passes, batch))
    per_stage()  # warm-up for this shape
    samples = {"explain": [], "reinit": [], "compare": [], "stage_limit": []}
    for _ in range(repeats):
        spent = dict.fromkeys(samples, 0.0)
        reference = None
        try:
            for stage in stages:
                start = time.perf_counter()
                if stage.index:
                    plans.randomize_stage(spec, model, stage, blocks, trained_weights, 0)
                spent["reinit"] += time.perf_counter() - start
                start = time.perf_counter()
                maps = plans.explain_all(context, plans.Step(stage, 0, model, images, targets))
                spent["explain"] += time.perf_counter() - start
                reference = reference or maps
                start = time.perf_counter()
                compare_stage(reference, maps, spec.metrics, spec.grid_images)
                spent["compare"] += time.perf_counter() - start
                start = time.perf_counter()
                per_stage()
                spent["stage_limit"] += time.perf_counter() - start
        finally:
            randomize.restore(model, trained_weights)
        for key, value in spent.items():
            samples[key].append(value)
    return {key: statistics.median(values) for key, values in samples.items()}
