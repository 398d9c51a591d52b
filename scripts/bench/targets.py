"""The report's targets: MET / MISSED lines (and INFO lines) from the rows after add_ratios."""

from __future__ import annotations

from .table import Row


def targets(rows: list[Row], facts: dict[str, float]) -> list[str]:
    out = []

    def line(ok, text):
        out.append(f"- {'MET' if ok else 'MISSED'}: {text}")

    # issue 14: every methods workload within 1.1x of the limit, the cascading workload within 1.15x
    for prefix, limit in (("a_", 1.1), ("b_", 1.1), ("c_", 1.15)):
        for r in rows:
            if r.workload.startswith(prefix) and r.role == "ours" and r.ratio_to_limit != "":
                line(r.ratio_to_limit <= limit, f"ours/limit <= {limit} on {r.workload}: {r.ratio_to_limit:.2f}")
    for r in rows:  # PAIR defaults = batch-1 calls, with the faster (tf.function) call_model_function
        if r.workload[:2] in ("a_", "b_") and "mnist" in r.workload and r.role == "peer" \
                and r.ratio_peer_to_ours != "" and r.batch_size == 1:
            if "tf.function" in r.system:
                line(r.ratio_peer_to_ours >= 5, f">= 5x faster than PAIR defaults on {r.workload} "
                     f"({r.system}): {r.ratio_peer_to_ours:.1f}x")
            else:
                out.append(f"- INFO: {r.workload}, {r.system}: {r.ratio_peer_to_ours:.1f}x")
    for r in rows:
        if r.workload.startswith("c_") and r.role == "peer" and r.ratio_peer_to_ours != "":
            line(r.ratio_peer_to_ours >= 10, f">= 10x faster than Quantus MPRT on {r.workload}: "
                 f"{r.ratio_peer_to_ours:.1f}x")
    for r in rows:
        if r.workload.startswith("d_") and r.role == "peer" and r.ratio_peer_to_ours != "":
            line(r.ratio_peer_to_ours >= 10, f"metrics >= 10x faster than the per-pair loop on {r.workload}: "
                 f"{r.ratio_peer_to_ours:.1f}x")
    for r in rows:
        if r.workload.startswith("a_") and "inception" in r.workload and r.role == "peer" \
                and r.ratio_peer_to_ours != "" and "tf.function" in r.system:
            ref = next((x for x in rows if x.workload == r.workload and x.system.startswith("same ")), None)
            label = r.workload.split("_", 2)[2]
            b1, best = facts.get(f"{label}_batch1_rate"), facts.get(f"{label}_best_rate")
            if ref is not None and b1:
                out.append(f"- INFO: {r.workload}: PAIR SmoothGrad / same passes in batches of "
                           f"{ref.batch_size} = {r.wall_s_median / ref.wall_s_median:.2f}x; throughput batch 1 "
                           f"{b1:.1f} images/s vs best batch {best:.1f} images/s ({best / b1:.2f}x): on a CPU the "
                           f"gap to PAIR is bounded by this; PAIR/ours = {r.ratio_peer_to_ours:.2f}x")
    for r in rows:
        if r.workload.startswith("e_whole_run_") and r.role == "ours":
            label = r.workload.split("_")[3] if not r.workload.startswith("e_whole_run_paper_size") else "paper_size"
            ratio = facts.get(f"whole_{label}")
            if ratio is not None:
                line(ratio <= 1.3, f"whole run within 1.3x of its passes plus start-up on {r.workload}: "
                                   f"{ratio:.2f}x")
    for name in ("mnist_cnn", "mnist_mlp"):
        if f"xla_{name}" in facts:
            out.append(f"- INFO: XLA (jit_compile=true) / plain on {name}: {facts[f'xla_{name}']:.2f}x "
                       f"({'faster' if facts[f'xla_{name}'] < 1 else 'slower'}: the default is off)")
    for kind in ("smoothgrad", "integrated_gradients"):
        ratio = facts.get(f"mem_{kind}")
        if ratio is not None:
            line(ratio < 1.5, f"peak memory bounded, {kind}: numpy peak at 2x samples/steps = {ratio:.2f}x "
                              f"the peak at 1x (batch_size fixed)")
    return out
