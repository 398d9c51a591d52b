"""Workload (m): peak memory of sanity's SmoothGrad and IG when the number of samples / steps doubles at a fixed
batch size (it must stay bounded: more chunks, not bigger ones)."""

from __future__ import annotations

from .measure import RssPeak, numpy_peak_mb
from .peers import ig_params, ours_explain, smoothgrad_params
from .table import Row


def run(ctx):
    model, images, targets = ctx.mnist_images(ctx.size["mem_images"])
    # a batch well below images x samples, so that doubling samples means more chunks, not bigger ones
    batch = max(1, min(64, len(images) * min(ctx.size["samples"], ctx.size["steps"]) // 4))
    for kind, key, base in (("smoothgrad", "samples", ctx.size["samples"]),
                            ("integrated_gradients", "steps", ctx.size["steps"])):
        peaks = {}
        for count in (base, 2 * base):
            params = smoothgrad_params(count) if kind == "smoothgrad" else ig_params(count, 0.0)
            ours_explain(model, images, targets, kind, params, batch)  # warm (tracing is not the workload)
            with RssPeak() as rss:
                peaks[count] = numpy_peak_mb(lambda: ours_explain(model, images, targets, kind, params, batch))
            ctx.rows.append(Row(f"m_memory_{kind}", f"sanity: {key}={count}", batch, len(images),
                                peak_numpy_mb=peaks[count], peak_rss_mb=rss.delta_mb, role="info",
                                note=f"{len(images)} MNIST images, batch_size={batch}"))
        ctx.facts[f"mem_{kind}"] = peaks[2 * base] / peaks[base] if peaks[base] > 0 else float("nan")
        ctx.log(f"memory    {kind}: numpy peak {peaks[base]:.2f} MB ({key}={base}) -> {peaks[2 * base]:.2f} MB "
                f"({key}={2 * base})")
