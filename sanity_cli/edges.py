"""Edge similarity (paper Fig. 1 and Sec. 5): how much each method's maps look like a model-free edge detector's
output on the same input, for the trained model and at every randomization stage, with the same metrics, 95%
intervals and null as the other similarities. A method whose maps stay as edge-like after full randomization as
before is an edge detector in disguise.

The comparisons are made with the stages (stages.compare_with_edges), in two views of each map: `map` (the map as
each metric normalises it, e.g. spearman_abs: |map|) and `departure` (|map - median(map)|, stages.departure).
Sec. 5's single ReLU layer has a gradient that is constant over flat regions and changes only near edges; that
constant can be large, so |map| may rank the flat regions above the edges while |map - median| finds them: the
departure view is the one that states the theory, the map view is what the other similarities compare.

edges.csv: per stage, method, edge (sobel, canny), view and metric: mean over images (each averaged over the
repeats), its 95% interval, n, n_undefined, and the null (a method's trained-model map of one image against the
edge map of another, the null's disjoint image pairs): null_similarity, null_ci_low, null_ci_high, null_n.
TensorFlow-free until edge_maps runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import report

EDGES = ("sobel", "canny")  # the model-free controls of sanity_cli/methods/controls.py, their default parameters
KEYS = ["model", "test", "stage", "block", "method", "edge", "view", "metric"]
COLUMNS = KEYS + ["mean", "ci_low", "ci_high", "n", "n_undefined", "null_similarity", "null_ci_low", "null_ci_high",
                  "null_n"]
VIEW_NAMES = {"map": "map", "departure": "|map - median|"}


def edge_maps(images: np.ndarray) -> dict[str, np.ndarray]:
    """{edge: its maps of the images}: the Sobel magnitude and the Canny edges of the grayscale inputs (the
    `sobel` and `canny` controls, on the images the methods explain)."""
    from . import methods

    return methods.explain_many(None, images, np.zeros(len(images), np.int32),
                                [(edge, edge, {}, 0) for edge in EDGES])


def summarize(table: pd.DataFrame, null: pd.DataFrame) -> pd.DataFrame:
    """edges.csv from the tidy edge similarities (stages.Comparison.edge_table) and their null (edge_null_table):
    per stage, method, edge, view and metric the mean over images with its 95% interval (report.mean_interval,
    each image first averaged over the repeats), beside the null's mean and interval."""
    rows = []
    for key, group in table.groupby(KEYS, sort=False):
        per_image = group[~group["undefined"]].groupby("image")["value"].mean().to_numpy(float)
        mean, low, high, n = report.mean_interval(per_image, report.metric_range(key[-1]))
        rows.append(dict(zip(KEYS, key), mean=mean, ci_low=low, ci_high=high, n=n,
                         n_undefined=int(group["undefined"].sum())))
    nulls = []
    for key, group in null.groupby(["method", "edge", "view", "metric"], sort=False):
        mean, low, high, n = report.mean_interval(group.loc[~group["undefined"], "value"].to_numpy(float),
                                                  report.metric_range(key[-1]))
        nulls.append(dict(zip(["method", "edge", "view", "metric"], key), null_similarity=mean, null_ci_low=low,
                          null_ci_high=high, null_n=n))
    summary = pd.DataFrame(rows, columns=COLUMNS[:-4])
    nulls_frame = pd.DataFrame(nulls, columns=["method", "edge", "view", "metric", "null_similarity", "null_ci_low",
                                               "null_ci_high", "null_n"])
    return summary.merge(nulls_frame, on=["method", "edge", "view", "metric"], how="left")[COLUMNS]


def shown_metric(edges: pd.DataFrame, preferred: str) -> str | None:
    """The metric the figure and the page show: the verdict's when it is a similarity, else the first one."""
    if edges is None or not len(edges):
        return None
    available = list(dict.fromkeys(edges["metric"]))
    return preferred if preferred in available else available[0]


def panels(edges: pd.DataFrame, metric: str, edge: str = "sobel") -> pd.DataFrame:
    """similarity.png's edge panels: the summary's columns (stage, block, method, metric, mean, ci_low, ci_high)
    with `metric` naming the panel, one per view."""
    chosen = edges[(edges["edge"] == edge) & (edges["metric"] == metric)]
    frames = [chosen[chosen["view"] == view].assign(metric=panel_name(edge, view, metric)) for view in VIEW_NAMES]
    return pd.concat(frames, ignore_index=True)[["stage", "block", "method", "metric", "mean", "ci_low", "ci_high"]]


def panel_name(edge: str, view: str, metric: str) -> str:
    return f"{edge.capitalize()} edges vs {VIEW_NAMES[view]} ({metric})"


def page_rows(edges: pd.DataFrame, metric: str, edge: str = "sobel") -> tuple[str, list[dict]]:
    """(the last stage's name, one row per method): its similarity with the edge maps for the trained model and at
    the last stage (every block randomized, for cascading) beside the null, in both views, as the page shows them."""
    chosen = edges[(edges["edge"] == edge) & (edges["metric"] == metric)]
    last = int(chosen["stage"].max())
    rows = []
    for method, group in chosen.groupby("method", sort=False):
        row: dict = {"method": method}
        for view in VIEW_NAMES:
            at = group[group["view"] == view].set_index("stage")
            for name, stage in (("trained", 0), ("randomized", last)):
                row[f"{view}_{name}"] = _cell(at, stage, "mean", "ci_low", "ci_high")
            row[f"{view}_null"] = _cell(at, 0, "null_similarity", "null_ci_low", "null_ci_high")
        rows.append(row)
    block = chosen.loc[chosen["stage"] == last, "block"]
    return (str(block.iloc[0]) if len(block) else ""), rows


def _cell(table: pd.DataFrame, stage: int, mean: str, low: str, high: str) -> str:
    if stage not in table.index or pd.isna(table.at[stage, mean]):
        return ""
    interval = report.format_interval(table.at[stage, low], table.at[stage, high])
    return f"{table.at[stage, mean]:.3f} {interval}".strip()
