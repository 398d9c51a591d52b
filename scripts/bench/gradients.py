"""Workloads (a) SmoothGrad of Gradient and (b) Integrated Gradients, on the MNIST CNN and Inception v3: the
limit, sanity's methods.explain, and PAIR `saliency` (checked to compute the same maps before timing)."""

from __future__ import annotations

import numpy as np

from sanity_cli import architectures

from .measure import check_maps, quiet
from .peers import (ig_params, ours_explain, pair_call_model_function, pair_ig, pair_ig_from_ours, pair_smoothgrad,
                    smoothgrad_params)
from .table import missing_row


def run(ctx, only: set[str]):
    if "mnist" in only:
        model, images, targets = ctx.mnist_images(ctx.size["mnist_images"])
        gradient_workloads(ctx, "mnist_cnn", model, images, targets, ctx.size["mnist_batches"],
                           architectures.get("mnist_cnn").black)
    if "inception" in only:
        model, images, targets = ctx.inception()
        gradient_workloads(ctx, f"inception_v3_{ctx.size['inc_size']}px", model, images, targets,
                           ctx.size["inc_batches"], architectures.get("inception").black)


def gradient_workloads(ctx, label: str, model, images, targets, batches, black: float):
    s, n = ctx.size, len(images)
    grad, best, rates = ctx.limit(label, model, batches)
    samples, steps = s["samples"], s["steps"]
    cmf = {c: pair_call_model_function(model, c) for c in (True, False)} if ctx.has_saliency else {}

    # ---- checks before timing
    ours_sg = ours_explain(model, images, targets, "smoothgrad", smoothgrad_params(samples), best)
    if ctx.has_saliency:
        theirs = pair_smoothgrad(images, targets, cmf[True], samples, same_noise_seed=0)
        # rtol: batch-1 and batched convolutions round differently, and a ReLU at the edge may flip for one of the
        # n x samples noisy inputs; PAIR's batch-1 calls may differ from ours by as much as our own batch-1 run
        ours_one = ours_explain(model, images, targets, "smoothgrad", smoothgrad_params(samples), 1)
        own = float(np.abs(ours_one - ours_sg).max() / np.abs(ours_sg).max())
        rtol = max(1e-3 if label.startswith("mnist") else 5e-3, 2 * own)
        ctx.checks.append(check_maps(f"{label} SmoothGrad-{samples}: sanity vs PAIR GetSmoothedMask, same noise "
                                     f"(sanity at batch 1 vs batch {best}: {own:.1e})", ours_sg, theirs, rtol=rtol,
                                     log=ctx.log))
        ig_ref = pair_ig_from_ours(model, images, targets, steps, black, best)
        theirs = pair_ig(images, targets, cmf[True], steps, black, batch_size=min(best, steps))
        ctx.checks.append(check_maps(f"{label} IG-{steps}: sanity (trapezoid identity) vs PAIR GetMask",
                                     ig_ref, theirs, rtol=rtol, log=ctx.log))

    # ---- (a) SmoothGrad
    wl = f"a_smoothgrad{samples}_{label}"
    passes = n * samples
    ctx.time_limit(wl, grad, model, passes, best, n)
    sg_params = smoothgrad_params(samples)
    ctx.time_system(wl, "sanity: methods.explain smoothgrad", "ours",
                    lambda: ours_explain(model, images, targets, "smoothgrad", sg_params, best), n, batch=best,
                    check=lambda out: check_maps(f"{wl} timed output", out, ours_sg, rtol=1e-5, log=quiet))
    if ctx.has_saliency:
        for compiled, name in ((True, "tf.function"), (False, "eager")):
            ctx.time_system(wl, f"saliency (PAIR) GetSmoothedMask, {name} call_model_function", "peer",
                            lambda c=compiled: pair_smoothgrad(images, targets, cmf[c], samples), n, batch=1,
                            repeats=None if compiled else 1,
                            note=("defaults (batch-1 calls; no batching option), magnitude=False; " if compiled
                                  else "as in PAIR's TF2 examples, 1 repeat; ") + "own np.random noise")
    else:
        ctx.rows.append(missing_row(wl, "saliency (PAIR)", "not installed"))
    if 1 in rates and label.startswith("inception"):
        # the reference ratio: PAIR's SmoothGrad vs the same gradients in batches of 25
        pair_batch = min(s["pair_batch"], passes)
        ctx.time_limit(wl, grad, model, passes, pair_batch, n, now=True)
        ctx.rows[-1].system = f"same {passes} passes, tf.function, batch {pair_batch}"
        ctx.rows[-1].role = "info"

    # ---- (b) Integrated Gradients
    wl = f"b_ig{steps}_{label}"
    passes = n * steps
    ctx.time_limit(wl, grad, model, passes, best, n)
    igp = ig_params(steps, black)
    ctx.time_system(wl, "sanity: methods.explain integrated_gradients", "ours",
                    lambda: ours_explain(model, images, targets, "integrated_gradients", igp, best), n, batch=best)
    if ctx.has_saliency:
        variants = [(True, 1, "tf.function, defaults (batch_size=1)"), (False, 1, "eager, defaults (batch_size=1)"),
                    (True, min(best, steps), f"tf.function, batch_size={min(best, steps)}")]
        for compiled, b, name in variants:
            ctx.time_system(wl, f"saliency (PAIR) IG GetMask, {name}", "peer",
                            lambda c=compiled, bb=b: pair_ig(images, targets, cmf[c], steps, black, bb), n,
                            batch=b, repeats=None if compiled else 1,
                            check=lambda out: check_maps(f"{wl} PAIR timed output", out, ig_ref, rtol=rtol,
                                                         log=quiet),
                            note="" if compiled else "as in PAIR's TF2 examples; 1 repeat")
    else:
        ctx.rows.append(missing_row(wl, "saliency (PAIR)", "not installed"))
