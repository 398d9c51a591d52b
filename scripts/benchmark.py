#!/usr/bin/env python3
"""Performance benchmark of `sanity`: our speed against the physical limit and against the peers, side by side.

    python scripts/benchmark.py --quick --out DIR     # a few minutes on 2 CPU cores (smaller images / counts)
    python scripts/benchmark.py --out DIR             # the full set (Inception at 299 px, 100 MNIST images, ...)

Writes DIR/benchmark.csv and DIR/benchmark.md. In one process run it measures, on the current device:

  limit   raw batched forward+backward passes of the workload in pure TensorFlow (one tf.function, data already
          on the device, best batch size of a sweep, no pipeline around it);
  sanity  the package's real code: sanity_cli.methods.explain, sanity_cli.plans.compare_all,
          sanity_cli.metrics.compare;
  peers   PAIR `saliency` (Gradient / SmoothGrad / Integrated Gradients; default settings, batch-1 calls, and its
          IG batch_size option) and Quantus' MPRT (cascading, top-down) with a gradient explainer, on the same
          model, images and hyperparameters. Peers are optional (`pip install -e ".[bench]"`); a missing peer
          gives "not installed" rows.

Workloads: (a) SmoothGrad of Gradient, (b) Integrated Gradients, each on Inception v3 (random weights) and the
MNIST CNN; (c) a full cascading run of the MNIST CNN with gradient + SmoothGrad over all stages; (d) similarity
metrics for many map pairs (vectorised vs a per-pair scipy / scikit-image loop); (e) a whole `sanity run` in its
own process (model cached) against the limit's passes plus its start-up, with the manifest's phases; (m) peak
memory when the number of samples / steps doubles; (x) the methods with XLA (`jit_compile`) on and off;
(p) the methods at float32 and in mixed precision (`precision`), with the maps' error against float32.

Before anything is timed, ours and the peers are checked to compute the same maps (PAIR SmoothGrad fed the same
noise, PAIR IG through an exact identity with our trapezoid IG, Quantus' per-layer Spearman scores recomputed
with our engine and rank correlation, the per-pair metric loop against metrics.compare). A failed check stops
the run with exit code 1: speed is not bought with wrong answers.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench package next to this script

from bench import cascading, gradients, memory, metrics, precision, whole_run, xla  # noqa: E402
from bench.context import SIZES, Context  # noqa: E402
from bench.measure import CheckFailed  # noqa: E402
from bench.peers import version  # noqa: E402
from bench.table import add_ratios, markdown_table, write_csv, write_markdown  # noqa: E402
from bench.targets import targets as report_targets  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller images and counts (a few minutes on 2 cores)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: seconds, same code paths
    parser.add_argument("--out", required=True, type=Path, help="directory for benchmark.csv and benchmark.md")
    parser.add_argument("--only", default="a,b,c,d,e,m,x,p",
                        help="comma list of workloads: a (SmoothGrad), b (IG), c (cascading), d (metrics), "
                             "e (whole `sanity run`), m (memory), x (XLA on/off), p (mixed precision); with 'mnist' "
                             "or 'inception' to "
                             "restrict a/b")
    parser.add_argument("--no-peers", action="store_true", help="skip saliency and quantus even if installed")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per system (median reported)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    size = dict(SIZES[mode])
    if args.repeats:
        size["repeats"] = args.repeats
    only = {w.strip() for w in args.only.split(",") if w.strip()}
    if not only & {"mnist", "inception"}:
        only |= {"mnist", "inception"}
    started = time.time()
    import tensorflow  # noqa: F401  (imported before the workloads, so start-up is not timed in them)

    from sanity_cli.manifest import device_summary

    ctx = Context(size, peers=not args.no_peers,
                  log=lambda msg: print(f"[{time.time() - started:6.1f}s] {msg}", flush=True))
    context = {"mode": mode, "device": device_summary(),
               "cpu": f"{os.cpu_count()} cores ({platform.machine()})",
               "versions": ", ".join(f"{dist} {version(dist)}"
                                     for dist in ("tensorflow", "keras", "numpy", "saliency", "quantus")),
               "repeats": size["repeats"]}
    ctx.log(f"device    {context['device']}; {context['cpu']}")
    try:
        if only & {"a", "b"}:
            gradients.run(ctx, only)
        if "c" in only:
            cascading.run(ctx)
        if "d" in only:
            metrics.run(ctx)
        if "e" in only:
            whole_run.run(ctx)
        if "x" in only:
            xla.run(ctx)
        if "p" in only:
            precision.run(ctx)
        if "m" in only:
            memory.run(ctx)
    except CheckFailed as err:
        print(f"benchmark: CHECK FAILED: {err}", file=sys.stderr)
        add_ratios(ctx.rows)
        write_csv(ctx.rows, args.out / "benchmark.csv")
        write_markdown(ctx.rows, [], ctx.checks + [f"FAILED: {err}"], context, args.out / "benchmark.md")
        return 1
    ctx.finish_limit()
    add_ratios(ctx.rows)
    targets = report_targets(ctx.rows, ctx.facts)
    context["total_s"] = round(time.time() - started, 1)
    write_csv(ctx.rows, args.out / "benchmark.csv")
    write_markdown(ctx.rows, targets, ctx.checks, context, args.out / "benchmark.md")
    print(markdown_table(ctx.rows))
    print("\n".join(targets))
    print(f"\nwrote {args.out / 'benchmark.csv'} and {args.out / 'benchmark.md'} in {context['total_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
