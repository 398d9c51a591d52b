"""Workload (d): similarity metrics for many map pairs, sanity's vectorised metrics.compare against the per-pair
scipy / scikit-image loop (checked to give the same values before timing)."""

from __future__ import annotations

import numpy as np

from .measure import check_values
from .peers import per_pair_metrics


def run(ctx):
    from scipy import ndimage
    from sanity_cli import metrics

    pairs = ctx.size["pairs"]
    rng = np.random.default_rng(0)
    a = ndimage.gaussian_filter(rng.standard_normal((pairs, 28, 28, 1)), sigma=(0, 1.5, 1.5, 0))
    b = a + 0.5 * ndimage.gaussian_filter(rng.standard_normal(a.shape), sigma=(0, 1, 1, 0))
    names = ["spearman_abs", "spearman", "ssim", "hog_pearson"]  # the paper's four
    ours = {m: metrics.compare(a, b, m)[0] for m in names}
    loop = per_pair_metrics(a, b, names)
    for m in names:
        ctx.checks.append(check_values(f"(d) {m}: metrics.compare vs per-pair scipy/skimage loop", ours[m],
                                       loop[m], atol=1e-6, log=ctx.log))
    for m in names:
        wl = f"d_metric_{m}_{pairs}pairs_28px"
        ctx.time_system(wl, "sanity: metrics.compare (vectorised)", "ours",
                        lambda m=m: metrics.compare(a, b, m), pairs, item="map pair")
        ctx.time_system(wl, "per-pair scipy/scikit-image loop", "peer",
                        lambda m=m: per_pair_metrics(a, b, [m]), pairs, item="map pair")
    wl = f"d_metrics_all4_{pairs}pairs_28px"
    ctx.time_system(wl, "sanity: metrics.compare (vectorised)", "ours",
                    lambda: [metrics.compare(a, b, m) for m in names], pairs, item="map pair")
    ctx.time_system(wl, "per-pair scipy/scikit-image loop", "peer", lambda: per_pair_metrics(a, b, names),
                    pairs, item="map pair")
