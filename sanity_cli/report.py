"""Tables from the tidy metrics: summary statistics, the null similarity and a verdict per method.

The verdict (rule `baseline`, the default) compares a method's similarity after randomization with its
*null similarity*: the same metric between the trained model's maps of two different images (seeded random
pairs; the baseline Arun et al., Radiology: AI 2021, use for SSIM). A method whose maps of the randomized
model are no more alike to the trained model's maps than the maps of two different images are has lost
what it showed, as it should.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from . import sanity_tests, seeds
from .metrics import METRICS

VERDICT_RULES = ("baseline", "threshold")
ALL_METRICS = "all"  # verdict.metric: every configured similarity decides (combined_verdict)
NULL_COLUMNS = ["method", "metric", "image", "other_image", "value", "undefined"]
METRIC_COLUMNS = ["model", "test", "stage", "block", "method", "metric", "image", "repeat", "value", "undefined"]


def t_half_width(std: float, n: int) -> float:
    """Half-width of the 95% t-interval of a mean of n > 1 values with sample standard deviation std."""
    return float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n))


def interval(values: np.ndarray, value_range: tuple[float, float] | None = None) -> tuple[float, float]:
    """The 95% t-interval of the mean of n >= 2 values, mean +- t(0.975, n-1) s / sqrt(n), clipped to the
    metric's value_range (every similarity here lies in [-1, 1]; with few images the unclipped interval left it).
    Clipping keeps the interval around the reported mean and costs no coverage: the true mean lies in the range.
    (A Fisher-z interval also stays inside, but is centred on tanh(mean z), not on the mean, and one value at
    +-1 widens it without bound.)"""
    values = np.asarray(values, float)
    mean, half = float(values.mean()), t_half_width(float(values.std(ddof=1)), len(values))
    if value_range is None:
        return mean - half, mean + half
    return max(mean - half, float(value_range[0])), min(mean + half, float(value_range[1]))


def metric_range(metric: str) -> tuple[float, float] | None:
    return METRICS[metric].value_range if metric in METRICS else None


def summarize(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per (stage, block, method, metric): mean, std, 95% interval of the mean over images (each image
    averaged over repeats first; `interval`), n (images with a defined value), seed_std (spread of the
    per-repeat means) and n_undefined (constant maps: correlation undefined, left out of the mean)."""
    rows = []
    keys = ["model", "test", "stage", "block", "method", "metric"]
    for key, group in metrics.groupby(keys, sort=False):
        # one value per image (its mean over randomization repeats): images are the independent samples
        values = group[~group["undefined"]].groupby("image")["value"].mean().to_numpy(float)
        n = len(values)
        mean = float(values.mean()) if n else np.nan
        std = float(values.std(ddof=1)) if n > 1 else (0.0 if n == 1 else np.nan)
        ci_low, ci_high = interval(values, metric_range(key[-1])) if n > 1 else (mean, mean)
        repeat_means = group[~group["undefined"]].groupby("repeat")["value"].mean()
        rows.append(dict(zip(keys, key), mean=mean, std=std, ci_low=ci_low, ci_high=ci_high, n=n,
                         n_undefined=int(group["undefined"].sum()),
                         seed_std=float(repeat_means.std(ddof=1)) if len(repeat_means) > 1 else np.nan))
    return pd.DataFrame(rows).sort_values(["stage", "method", "metric"], kind="stable").reset_index(drop=True)


def null_pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n // 2 disjoint pairs of different images (first[k], second[k]), from a seeded permutation: each image
    is in at most one pair, so the pairs' similarities are independent samples of the null."""
    order = seeds.rng(seed, seeds.NULL_PAIRS).permutation(n)
    half = n // 2
    return np.sort(order[:half]), order[half:2 * half][np.argsort(order[:half])]


def mean_interval(values: np.ndarray, value_range: tuple[float, float] | None = None
                  ) -> tuple[float, float, float, int]:
    """(mean, ci_low, ci_high, n): the mean of the finite values and its 95% `interval`; the interval is
    undefined (NaN) with fewer than two values."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    n = len(values)
    if n == 0:
        return np.nan, np.nan, np.nan, 0
    mean = float(values.mean())
    if n == 1:
        return mean, np.nan, np.nan, 1
    return (mean, *interval(values, value_range), n)


def summarize_null(null: pd.DataFrame) -> pd.DataFrame:
    """Per method and metric: the mean null similarity over image pairs with its 95% t-interval."""
    rows = []
    for (method, metric), group in null.groupby(["method", "metric"], sort=False):
        mean, low, high, n = mean_interval(group.loc[~group["undefined"], "value"].to_numpy(float),
                                           metric_range(metric))
        rows.append({"method": method, "metric": metric, "null_similarity": mean, "null_ci_low": low,
                     "null_ci_high": high, "null_n": n, "null_n_undefined": int(group["undefined"].sum())})
    return pd.DataFrame(rows, columns=["method", "metric", "null_similarity", "null_ci_low", "null_ci_high", "null_n",
                                       "null_n_undefined"])


def decide(similarity: float, ci_low: float, ci_high: float, null_high: float, rule: str,
           threshold: float, higher_is_more_similar: bool = True, most_similar: float = 1.0) -> tuple[str, str]:
    """PASS / FAIL / INCONCLUSIVE and the reason, for a method whose preconditions are met.

    baseline: PASS when the similarity's whole 95% interval lies at or below the null's upper bound
    (ci_high <= null_ci_high: no more similar than maps of two different images); FAIL when it lies wholly
    above (ci_low > null_ci_high); otherwise these images cannot tell: INCONCLUSIVE. Both need evidence, so a
    handful of images gives INCONCLUSIVE rather than a PASS by default. threshold: FAIL when the mean
    similarity >= threshold. A score where higher means *less* alike (eMPRT's entropy rise) is judged mirrored
    against the same kind of null (the score from one image's trained map to another's): PASS when its whole
    interval lies above the null's upper bound (ci_low > null_ci_high: randomizing the model raises the maps'
    complexity more than changing the image does), FAIL when it lies at or below it (ci_high <= null_ci_high).
    A similarity can decide only while the null's upper bound lies below the metric's largest value
    (`most_similar`, 1): maps that did not change at all (similarity 1, ci_low 1) FAIL exactly when
    1 > null_ci_high, so with a null interval reaching 1 (too few or too spread image pairs: mean +
    t(0.975, m - 1) s / sqrt(m) >= 1 for m pairs) every method would PASS, and none is judged: INCONCLUSIVE.
    """
    if np.isnan(similarity):
        return "INCONCLUSIVE", "every map pair was constant: the similarity is undefined"
    if rule == "threshold":
        if similarity >= threshold:
            return "FAIL", f"similarity {similarity:.3f} >= threshold {threshold}"
        return "PASS", f"similarity {similarity:.3f} < threshold {threshold}"
    if np.isnan(ci_high) or np.isnan(null_high):
        return "INCONCLUSIVE", "no 95% interval: needs at least 2 images and 2 image pairs (4 images) with defined maps"
    if not higher_is_more_similar:
        if ci_low > null_high:
            return "PASS", "randomizing the model raises the maps' complexity more than changing the image does"
        if ci_high <= null_high:
            return "FAIL", ("the maps' complexity rises no more than between two images' maps: they keep their "
                            "structure when the model is randomized")
        return "INCONCLUSIVE", "the 95% intervals of the score and the null overlap: explain more images (n_images)"
    if null_high >= most_similar:
        return "INCONCLUSIVE", ("the null's 95% interval reaches the largest similarity (too few or too spread "
                                "image pairs): even maps that did not change could not FAIL; explain more images "
                                "(n_images)")
    if ci_high <= null_high:
        return "PASS", "no more similar than maps of two different images"
    if ci_low > null_high:
        return "FAIL", "clearly more similar than maps of two different images: the maps survive"
    return "INCONCLUSIVE", "the 95% intervals of similarity and null overlap: explain more images (n_images)"


def verdict(summary: pd.DataFrame, test: str, metric: str, controls: set[str], *, rule: str = "baseline",
            threshold: float = 0.5, null: pd.DataFrame | None = None,
            problems: dict[str, list[str]] | None = None, metrics: pd.DataFrame | None = None,
            invariance: dict[str, float] | None = None, tolerance: float = 0.0) -> pd.DataFrame:
    """For each method: the similarity between trained and randomized explanations and its verdict.

    cascading: the last stage (every block randomized); independent: the mean over single-block stages, its
    interval over images of each image's mean over the blocks (from the tidy `metrics`; without them, the range of
    the blocks' intervals); data: true-label vs permuted-label model; input_invariance: original vs shifted inputs,
    judged on `invariance` (each method's largest relative map change): PASS when <= tolerance, else FAIL;
    random_logit: the maps of two classes of the same image, judged against the null like the randomization
    tests (a method whose maps do not depend on the class is as alike as the same map twice). `null` is
    summarize_null's table; `problems` maps a method
    (or "*" for every method) to unmet preconditions, which make its verdict INCONCLUSIVE, as does a
    constant map in any compared pair. Model-free controls get no verdict: they are `reference` rows showing
    what a map that ignores the model scores.
    """
    problems = problems or {}
    judged = sanity_tests.get(test).judged
    chosen = summary[(summary["metric"] == metric) & (summary["stage"] > 0)]
    if judged == "last_stage":
        chosen = chosen[chosen["stage"] == chosen["stage"].max()]
    nulls = {} if null is None else {row.method: row for row in null[null["metric"] == metric].itertuples()}
    rows = []
    for method, group in chosen.groupby("method", sort=False):
        undefined = int(group["n_undefined"].sum())
        compared = _compared(test, group)
        group = group[group["n"] > 0]  # a block whose maps were all constant has no mean to pool
        n = int(group["n"].sum())
        mean = float(np.average(group["mean"], weights=group["n"])) if n else np.nan
        ci_low = float(group["ci_low"].min()) if n else np.nan
        ci_high = float(group["ci_high"].max()) if n else np.nan
        if judged == "mean_over_stages" and metrics is not None:
            mean, ci_low, ci_high, n = per_image_blocks_interval(metrics, method, metric)
        base = nulls.get(method)
        null_mean, null_low, null_high = ((base.null_similarity, base.null_ci_low, base.null_ci_high)
                                          if base is not None else (np.nan, np.nan, np.nan))
        unmet = problems.get("*", []) + problems.get(method, [])
        if undefined:  # a constant map explains nothing; dropping those images would bias the mean
            unmet = unmet + [f"{undefined} of {n + undefined} map pairs hold a constant map (similarity undefined)"]
        if method in controls:
            outcome, reason = "reference", "model-free control: no verdict"
        elif unmet:
            outcome, reason = "INCONCLUSIVE", "; ".join(unmet)
        elif invariance is not None:
            change = invariance.get(method, np.inf)
            outcome, reason = (("PASS", f"maps unchanged by the input shift (largest relative change {change:.2g})")
                               if change <= tolerance else
                               ("FAIL", f"maps change with the input shift although the model's function does not "
                                        f"(largest relative change {change:.2g} > {tolerance:g})"))
        elif rule == "baseline" and n < 2:
            outcome, reason = "INCONCLUSIVE", "needs at least 2 images with defined maps"
        else:
            outcome, reason = decide(mean, ci_low, ci_high, null_high, rule, threshold,
                                     METRICS[metric].higher_is_more_similar, METRICS[metric].value_range[1])
        rows.append({"method": method, "role": "control" if method in controls else "method", "metric": metric,
                     "similarity": mean, "ci_low": ci_low, "ci_high": ci_high, "n": n, "n_undefined": undefined,
                     "null_similarity": null_mean, "null_ci_low": null_low, "null_ci_high": null_high,
                     "rule": rule, "threshold": threshold if rule == "threshold" else np.nan,
                     "verdict": outcome, "reason": reason, "compared": compared})
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values(["role", "similarity"], ascending=[False, True], kind="stable")
    return table.reset_index(drop=True)


def combined_verdict(summary: pd.DataFrame, test: str, chosen: list[str], controls: set[str], **options
                     ) -> pd.DataFrame:
    """verdict.metric=all: each method judged by every similarity metric in `chosen` (the paper's four: Spearman of
    absolute and of signed maps, SSIM, HOG), then combined: FAIL when its maps clearly survive by at least one
    metric, PASS when by every metric they are no more alike than two different images' maps, otherwise
    INCONCLUSIVE. A single metric can be blind to what another sees: Spearman of |maps| ranks mostly where the maps'
    mass lies, which maps of two different digits share (their null is high), while signed Spearman, SSIM and HOG
    see the maps' structure. The row keeps the deciding metric's similarity and null (a failing one, or the first),
    and `by_metric` lists every metric's verdict."""
    tables = {metric: verdict(summary, test, metric, controls, **options).set_index("method") for metric in chosen}
    first = tables[chosen[0]]
    rows = []
    for method in first.index:
        outcomes = {metric: str(table.loc[method, "verdict"]) for metric, table in tables.items()}
        failing = [m for m, v in outcomes.items() if v == "FAIL"]
        unsure = [m for m, v in outcomes.items() if v == "INCONCLUSIVE"]
        if first.loc[method, "role"] == "control":
            decided, outcome, reason = chosen[0], "reference", first.loc[method, "reason"]
        elif failing:
            decided, outcome = failing[0], "FAIL"
            reason = f"clearly more similar than maps of two different images by {', '.join(failing)}: the maps survive"
        elif unsure:
            decided, outcome = unsure[0], "INCONCLUSIVE"
            by_reason: dict[str, list[str]] = {}
            for m in unsure:
                by_reason.setdefault(str(tables[m].loc[method, "reason"]), []).append(m)
            reason = "; ".join(f"{', '.join(ms)}: {text}" for text, ms in by_reason.items())
        else:
            decided, outcome = chosen[0], "PASS"
            reason = f"by every metric ({', '.join(chosen)}) no more similar than maps of two different images"
        row = tables[decided].loc[method].to_dict()
        row.update(method=method, verdict=outcome, reason=reason,
                   by_metric=", ".join(f"{m} {v}" for m, v in outcomes.items()))
        rows.append(row)
    columns = ["method", *[c for c in first.columns], "by_metric"]
    return pd.DataFrame(rows)[columns].reset_index(drop=True)


def per_image_blocks_interval(metrics: pd.DataFrame, method: str, metric: str) -> tuple[float, float, float, int]:
    """Independent test: each image's mean similarity over the single-block stages (and repeats), then the mean
    over images and its 95% interval: images, not blocks, are the independent samples."""
    rows = metrics[(metrics["method"] == method) & (metrics["metric"] == metric) & (metrics["stage"] > 0)
                   & ~metrics["undefined"].astype(bool)]
    per_image = rows.groupby(["image", "stage"])["value"].mean().groupby("image").mean().to_numpy(float)
    return mean_interval(per_image, metric_range(metric))


def _compared(test: str, group: pd.DataFrame) -> str:
    spec = sanity_tests.get(test)
    if spec.judged == "last_stage":
        smoothed = ", explanations averaged over noisy copies of each input" if spec.smoothing else ""
        return f"trained vs all blocks randomized (the last: {group['block'].iloc[0]}){smoothed}"
    if spec.judged == "mean_over_stages":
        return f"trained vs each block alone ({len(group)} blocks), mean; CI over images of their mean over blocks"
    if spec.family == "input_invariance":
        return "original inputs vs inputs shifted by a constant, the model's first-layer bias absorbing the shift"
    if spec.family == "random_logit":
        return "the explained class vs a random other class, same model and image"
    return "true-label vs permuted-label model"


def format_interval(low, high) -> str:
    """A 95% interval as the console and the pages show it; empty when it is undefined."""
    return "" if pd.isna(low) or pd.isna(high) else f"[{low:+.2f}, {high:+.2f}]"


def format_verdict(table: pd.DataFrame) -> str:
    """The verdict as an aligned text table for the terminal."""
    if table.empty:
        return "(no verdict: no randomized stage)"
    combined = "by_metric" in table
    lines = [f"{'method':34s} {'metric' + ' ' * 7 if combined else ''}{'similarity':>10s} {'95% CI':>15s} "
             f"{'null':>6s} {'null 95% CI':>15s} {'n':>4s}  verdict"]
    for row in table.itertuples():
        ci = format_interval(row.ci_low, row.ci_high)
        null_value = getattr(row, "null_similarity", np.nan)
        null = f"{null_value:6.3f}" if not pd.isna(null_value) else f"{'':6s}"
        null_ci = format_interval(getattr(row, "null_ci_low", np.nan), getattr(row, "null_ci_high", np.nan))
        # an INCONCLUSIVE reason already counts the undefined pairs
        inconclusive = row.verdict == "INCONCLUSIVE"
        detail = f"  ({row.reason})" if inconclusive else ""
        undefined = f"  ({row.n_undefined} undefined)" if row.n_undefined and not inconclusive else ""
        metric = f"{row.metric:13s}" if combined else ""
        lines.append(f"{row.method:34s} {metric}{row.similarity:10.3f} {ci:>15s} {null} {null_ci:>15s} {row.n:4d}  "
                     f"{row.verdict}{detail}{undefined}")
    if (table["role"] == "control").any():
        names = ", ".join(table.loc[table["role"] == "control", "method"])
        lines.append(f"reference rows ({names}): model-free controls; their similarity shows what a map that "
                     f"ignores the model scores, so they get no verdict.")
    return "\n".join(lines)
