"""Tables from the tidy metrics: summary statistics and a PASS/FAIL verdict per method."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

METRIC_COLUMNS = ["model", "test", "stage", "block", "method", "metric", "image", "repeat", "value", "undefined"]


def summarize(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per (stage, block, method, metric): mean, std, 95% t-interval of the mean over images (each image
    averaged over repeats first), n (images with a defined value), seed_std (spread of the per-repeat means)
    and n_undefined (constant maps: correlation undefined, left out of the mean)."""
    rows = []
    keys = ["model", "test", "stage", "block", "method", "metric"]
    for key, group in metrics.groupby(keys, sort=False):
        # one value per image (its mean over randomization repeats): images are the independent samples
        values = group[~group["undefined"]].groupby("image")["value"].mean().to_numpy(float)
        n = len(values)
        mean = float(values.mean()) if n else np.nan
        std = float(values.std(ddof=1)) if n > 1 else (0.0 if n == 1 else np.nan)
        half = float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else 0.0 if n == 1 else np.nan
        repeat_means = group[~group["undefined"]].groupby("repeat")["value"].mean()
        rows.append(dict(zip(keys, key), mean=mean, std=std, ci_low=mean - half, ci_high=mean + half, n=n,
                         n_undefined=int(group["undefined"].sum()),
                         seed_std=float(repeat_means.std(ddof=1)) if len(repeat_means) > 1 else np.nan))
    return pd.DataFrame(rows).sort_values(["stage", "method", "metric"], kind="stable").reset_index(drop=True)


def verdict(summary: pd.DataFrame, test: str, metric: str, threshold: float, controls: set[str]) -> pd.DataFrame:
    """For each method: the similarity between trained and randomized explanations and PASS / FAIL.

    cascading: the last stage (every block randomized); independent: the mean over single-block stages;
    data: true-label vs permuted-label model. A method FAILs when its maps stay similar (mean >= threshold)
    after the model (or its training labels) was destroyed; controls are reference rows.
    """
    chosen = summary[(summary["metric"] == metric) & (summary["stage"] > 0)]
    if test == "cascading":
        chosen = chosen[chosen["stage"] == chosen["stage"].max()]
    rows = []
    for method, group in chosen.groupby("method", sort=False):
        undefined = int(group["n_undefined"].sum())
        group = group[group["n"] > 0]  # a block whose maps were all constant has no mean to pool
        n = int(group["n"].sum())
        mean = float(np.average(group["mean"], weights=group["n"])) if n else np.nan
        if np.isnan(mean):
            outcome = "UNDEFINED"
        else:
            outcome = "FAIL" if mean >= threshold else "PASS"
        rows.append({"method": method, "role": "control" if method in controls else "method", "metric": metric,
                     "similarity": mean, "ci_low": float(group["ci_low"].min()),
                     "ci_high": float(group["ci_high"].max()), "n": n, "n_undefined": undefined, "threshold": threshold, "verdict": outcome,
                     "compared": _compared(test, group)})
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values(["role", "similarity"], ascending=[False, True], kind="stable")
    return table.reset_index(drop=True)


def _compared(test: str, group: pd.DataFrame) -> str:
    if test == "cascading":
        return f"trained vs all blocks randomized (down to {group['block'].iloc[0]})"
    if test == "independent":
        return f"trained vs each block alone ({len(group)} blocks), mean; CI = range of the block CIs"
    return "true-label vs permuted-label model"


def format_verdict(table: pd.DataFrame) -> str:
    """The verdict as an aligned text table for the terminal."""
    if table.empty:
        return "(no verdict: no randomized stage)"
    lines = [f"{'method':34s} {'similarity':>10s} {'95% CI':>17s} {'n':>5s}  verdict"]
    for row in table.itertuples():
        ci = f"[{row.ci_low:+.2f}, {row.ci_high:+.2f}]" if not np.isnan(row.similarity) else ""
        label = row.verdict + ("  (model-free control)" if row.role == "control" else "")
        undefined = f"  ({row.n_undefined} undefined)" if row.n_undefined else ""
        lines.append(f"{row.method:34s} {row.similarity:10.3f} {ci:>17s} {row.n:5d}  {label}{undefined}")
    return "\n".join(lines)
