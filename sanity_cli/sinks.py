"""Write: a Result as the run directory's files (tables, grids, plots, models, manifest, report.html), each
written atomically; the same writer for `sanity run` and check()'s Result.save(). What makes the run reproducible
(resolved config, versions, data provenance, seeds, git commit, device, phase times) goes into manifest.json."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .io import atomic_path, write_json
from .manifest import build_manifest

TABLES = ("metrics.csv", "summary.csv", "null.csv", "verdict.csv")


def grid_file(mode: str, index: int) -> str:
    """The saliency grid of the index-th shown image (0-based): grid_absolute_1.png, grid_diverging_1.png, ..."""
    return f"grid_{mode}_{index + 1}.png"


def write_tables(result, run_dir: Path) -> None:
    frames = {"metrics.csv": result.metrics, "summary.csv": result.summary, "null.csv": result.null,
              "verdict.csv": result.verdict}
    for name in TABLES:
        with atomic_path(run_dir / name) as tmp:
            frames[name].to_csv(tmp, index=False, float_format="%.8g")
    with atomic_path(run_dir / "models.csv") as tmp:
        result.models.to_csv(tmp, index=False, float_format="%.6g")
    if len(result.edges):
        with atomic_path(run_dir / "edges.csv") as tmp:
            result.edges.to_csv(tmp, index=False, float_format="%.8g")


def write_plots(result, run_dir: Path) -> None:
    """The paper's Fig. 2 (one grid per shown image, absolute and diverging) and the similarity plot (Fig. 4 style
    curves over the stages; bars for a test of one comparison), with two panels of the Sobel edge similarity."""
    import pandas as pd

    from . import edges, plots

    spec = result.spec
    title = f"{spec.model_name} on {spec.config['data']['name']}: {spec.test.name} test"
    shown = result.images[: spec.grid_images]
    for mode in ("absolute", "diverging"):
        for k in range(len(shown)):
            plots.saliency_grid(run_dir / grid_file(mode, k), shown[k:k + 1],
                                {method: maps[k:k + 1] for method, maps in result.grids[mode].items()},
                                result.stages, mode, input_captions=result.captions[k:k + 1],
                                title=f"{title} ({mode} maps)")
    chosen, summary = list(spec.metrics), result.summary
    metric = edges.shown_metric(result.edges, spec.verdict.metric)
    if metric is not None:  # the Sobel edge similarity's panels (map, |map - median|), after the metrics'
        panels = edges.panels(result.edges, metric)
        chosen, summary = chosen + list(dict.fromkeys(panels["metric"])), pd.concat([summary, panels])
    if result.summary["stage"].max() == 1:  # one comparison (data, random logit, invariance, eMPRT): bars
        plots.data_test_bars(run_dir / "similarity.png", summary[summary["stage"] == 1], chosen,
                             title=title, controls=result.controls)
    else:
        plots.similarity_curves(run_dir / "similarity.png", summary, chosen, title=title, controls=result.controls)


def write_run(result, run_dir: Path, command: list[str] | None = None,
              finished: Callable[[], None] | None = None) -> Path:
    """Every file of a finished run in `run_dir`; the manifest last but for the page: a directory with a manifest
    is a finished run. `finished()` (the CLI: remove the resumable units) runs between the two."""
    from .pages import run_page

    run_dir = Path(run_dir)
    start = time.perf_counter()
    write_tables(result, run_dir)
    if result.spec.plots:
        write_plots(result, run_dir)
    phases = dict(result.phases, write=round(time.perf_counter() - start, 3))
    spec = result.spec
    write_json(run_dir / "manifest.json", build_manifest(
        spec.config, provenance=result.provenance, models=result.models.to_dict(orient="records"),
        phases=phases, started=result.started, command=command,
        extra={"explained_images": result.image_ids.tolist(), "targets": result.targets.tolist(),
               "captions": result.captions, "config_fingerprint": spec_fingerprint(spec),
               "resumed_units": result.resumed_units, "self_checks": result.self_checks}))
    if finished is not None:
        finished()
    run_page(run_dir)  # report.html, built from the files just written
    return run_dir


def spec_fingerprint(spec) -> str:
    from .rundir import config_fingerprint

    return config_fingerprint(spec.config)
