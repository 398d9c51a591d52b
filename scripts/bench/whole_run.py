"""Workload (e): a complete `sanity run` as a user starts it (its own process, model cached): wall time against the
limit's time for the same gradient passes plus the start-up, with the phases the run's manifest records."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from .table import Row


def run(ctx):
    from sanity_cli import models

    s = ctx.size
    cfg, _, trained = ctx.mnist()  # trains (or loads) the cached model the runs below will hit
    grad, best, _ = ctx.best.get("mnist_cnn") or ctx.limit("mnist_cnn", trained.model, s["mnist_batches"])
    stages = 1 + len(models.layer_blocks(trained.model))
    for label, n, samples in s["whole_runs"]:
        workload = f"e_whole_run_{label}_mnist_cnn_{n}img_grad+sg{samples}"
        passes = stages * n * (1 + samples)
        ctx.time_limit(workload, grad, trained.model, passes, best, n, item="image (all stages)", now=True)
        walls, phases = [], []
        for repeat in range(s["repeats"]):
            out = ctx.tmp / f"{workload}_{repeat}"
            args = [sys.executable, "-m", "sanity_cli", "run", "model=mnist_cnn", "data=mnist", "data.source=bundled",
                    "test=cascading", "method=[gradient,smoothgrad_gradient]", "metric=[spearman_abs]",
                    f"method.smoothgrad_gradient.samples={samples}", f"n_images={n}", f"batch_size={best}",
                    f"cache_dir={ctx.tmp / 'models'}", f"train.max_train_images={s['train_images']}",
                    "train.epochs=1", f"hydra.run.dir={out}"]
            start = time.perf_counter()
            done = subprocess.run(args, capture_output=True, text=True, cwd=ctx.tmp)
            walls.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise RuntimeError(f"{workload}: sanity run failed: {done.stderr[-800:]}")
            manifest = json.loads((out / "manifest.json").read_text())
            phases.append(dict(manifest["phase_seconds"], pipeline=manifest["wall_seconds"],
                               model_cache=manifest["models"][0]["cache"]))
        median = sorted(range(len(walls)), key=walls.__getitem__)[len(walls) // 2]
        wall, phase = walls[median], phases[median]
        startup = wall - phase["pipeline"]
        limit_s = next(r for r in ctx.rows if r.workload == workload and r.role == "limit").wall_s_median
        breakdown = ", ".join(f"{k} {phase[k]:.2f}" for k in ("data", "model", "explain_randomize_compare", "write")
                              if k in phase)
        ctx.rows.append(Row(workload, "sanity run (own process: start-up, Hydra, pipeline, files)", best, n,
                            "image (all stages)", wall, min(walls), max(walls), n / wall, role="ours",
                            note=f"start-up {startup:.2f} s (process start, imports, config, before the pipeline); "
                                 f"pipeline {phase['pipeline']:.2f} s: {breakdown}; model {phase['model_cache']}; "
                                 f"passes+start-up = {(limit_s + startup):.2f} s, wall / (passes + start-up) = "
                                 f"{wall / (limit_s + startup):.2f}"))
        ctx.facts[f"whole_{label}"] = wall / (limit_s + startup)
        ctx.log(f"timed     {workload}: {wall:.2f} s (start-up {startup:.2f}, limit {limit_s:.2f})")
