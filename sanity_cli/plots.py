"""Figures in the style of Adebayo et al. (NeurIPS 2018): saliency grids, similarity curves, data-test bars.

Everything is drawn on :class:`matplotlib.figure.Figure` objects (Agg canvas, no pyplot, no global
state) and every PNG is written through :func:`sanity_cli.io.atomic_path`, so a reader never sees a
half-written file. Undefined values (NaN) are simply not drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import os
import re
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import BboxImage
from matplotlib.lines import Line2D
from matplotlib.transforms import Bbox, TransformedBbox

from .io import atomic_path
from .metrics import METRICS

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["saliency_grid", "similarity_curves", "data_test_bars"]

# Output size control -----------------------------------------------------------------------------
MAX_DPI = 150
MIN_DPI = 50
PIXEL_BUDGET = 3_500_000  # pixels per figure before dpi is lowered
MAX_BYTES = 5 * 1024 * 1024  # re-save at a lower dpi if the PNG comes out bigger than this

# Approximate width of one character in inches at font size `pt` (average for DejaVu Sans).
_CHAR_W = 0.58 / 72.0

_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]
_SUMMARY_REQUIRED = ("stage", "block", "method", "metric", "mean")


# Helpers -----------------------------------------------------------------------------------------
def _text_width(text: str, pt: float) -> float:
    """Rough rendered width (inches) of the longest line of `text`."""
    lines = str(text).splitlines() or [""]
    return max(len(line) for line in lines) * pt * _CHAR_W


def _wrap(text: str, width: int) -> str:
    """Wrap `text` to lines of at most ~`width` characters, preferring breaks after ' ', '_' and '-'."""
    text = str(text)
    if len(text) <= width:
        return text
    tokens = [t for t in re.split(r"(?<=[ _\-])", text) if t]
    lines: list[str] = []
    line = ""
    for tok in tokens:
        if line and len(line) + len(tok.rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        while len(tok) > width:  # a single token longer than a line: hard-break it
            lines.append(tok[:width])
            tok = tok[width:]
        line += tok
    if line.strip():
        lines.append(line.rstrip())
    return "\n".join(lines) or text


def _choose_dpi(fig: Figure) -> int:
    w, h = fig.get_size_inches()
    dpi = math.sqrt(PIXEL_BUDGET / max(w * h, 1e-6))
    return int(max(MIN_DPI, min(MAX_DPI, dpi)))


def _save(fig: Figure, path: str | os.PathLike, dpi: int | None = None) -> None:
    """Write `fig` as PNG atomically; lower the dpi until the file is below MAX_BYTES (or MIN_DPI)."""
    dpi = dpi or _choose_dpi(fig)
    with atomic_path(path) as tmp:
        while True:
            fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
            if os.path.getsize(tmp) <= MAX_BYTES or dpi <= MIN_DPI:
                break
            dpi = max(MIN_DPI, int(dpi * 0.8))


def _method_colors(methods: list[str]) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _unique_in_order(values) -> list:
    seen: dict = {}
    for v in values:
        if v not in seen:
            seen[v] = None
    return list(seen)


def _validate_summary(summary, metrics: list[str], what: str):
    import pandas as pd

    if not isinstance(summary, pd.DataFrame):
        raise ValueError(f"{what}: summary must be a pandas DataFrame, got {type(summary).__name__}")
    missing = [c for c in _SUMMARY_REQUIRED if c not in summary.columns]
    if missing:
        raise ValueError(
            f"{what}: summary is missing column(s) {missing}; expected columns "
            f"{list(_SUMMARY_REQUIRED) + ['ci_low', 'ci_high']} (have {list(summary.columns)})"
        )
    if isinstance(metrics, str):
        metrics = [metrics]
    metrics = list(metrics)
    if not metrics:
        raise ValueError(f"{what}: metrics is empty; pass at least one metric name")
    if len(summary) == 0:
        raise ValueError(f"{what}: summary has no rows")
    available = _unique_in_order(summary["metric"].astype(str))
    absent = [m for m in metrics if m not in available]
    if absent:
        raise ValueError(f"{what}: metric(s) {absent} not in summary (available: {available})")
    df = summary[summary["metric"].astype(str).isin(metrics)].copy()
    df["metric"] = df["metric"].astype(str)
    df["method"] = df["method"].astype(str)
    df["block"] = df["block"].astype(str)
    stage = pd.to_numeric(df["stage"], errors="coerce")
    if stage.isna().any():
        raise ValueError(f"{what}: column 'stage' must hold integers (found missing/non-numeric values)")
    df["stage"] = stage.astype(int)
    for col in ("mean", "ci_low", "ci_high"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
        else:
            df[col] = np.nan
    return df, metrics


def _panel_grid(n: int) -> tuple[int, int]:
    """(rows, cols) for n panels: one row up to 3, 2x2 for 4, then rows of 3."""
    if n <= 3:
        return 1, n
    if n == 4:
        return 2, 2
    return int(math.ceil(n / 3)), 3


# Saliency grid -----------------------------------------------------------------------------------
def _grid_arrays(inputs, maps, column_labels, input_captions):
    """saliency_grid_figure's arguments checked: (inputs (N, H, W, C), {method: (N, S, H, W)}, column labels,
    captions or None)."""
    inputs = np.asarray(inputs, dtype=float)
    if inputs.ndim == 3:
        inputs = inputs[..., None]
    if inputs.ndim != 4 or inputs.shape[-1] not in (1, 3):
        raise ValueError(
            f"saliency_grid: inputs must have shape (N, H, W, C) with C in (1, 3), got {inputs.shape}"
        )
    n_img, height, width = inputs.shape[:3]
    if n_img == 0:
        raise ValueError("saliency_grid: inputs holds no images (N = 0)")
    if not maps:
        raise ValueError("saliency_grid: maps is empty; pass at least one method")
    column_labels = [str(c) for c in column_labels]
    n_stage = len(column_labels)
    if n_stage == 0:
        raise ValueError("saliency_grid: column_labels is empty; pass one label per stage")
    arrays: dict[str, np.ndarray] = {}
    expected = (n_img, n_stage, height, width)
    for m in maps:
        a = np.asarray(maps[m], dtype=float)
        if a.shape != expected:
            raise ValueError(
                f"saliency_grid: maps[{m!r}] has shape {a.shape}, expected (N, S, H, W) = {expected} "
                f"(N images from inputs, S = len(column_labels) = {n_stage}, H, W from inputs)"
            )
        arrays[m] = a
    if input_captions is not None:
        input_captions = [str(c) for c in input_captions]
        if len(input_captions) != n_img:
            raise ValueError(
                f"saliency_grid: got {len(input_captions)} input_captions for {n_img} images"
            )
    return inputs, arrays, column_labels, input_captions


@dataclass
class _GridLayout:
    """The grid's sizes, in inches (then converted to figure fractions)."""

    fig_w: float
    fig_h: float
    cell: float
    gutter: float
    left: float
    top: float            # title and column titles
    block_h: float
    block_gap: float
    rotate: bool
    wrapped: list[str]    # the method labels
    captions: list[str] | None
    font: float = 10.0    # method and column labels: larger than the captions and tick-sized text
    small: float = 8.0
    pad: float = 0.04     # between cells
    pad_in: float = 3 / 72.0  # a title's distance above its cell (matplotlib's title pad, 3 points)

    @property
    def step(self) -> float:
        return self.cell + self.pad

    def at(self, x_in: float, y_from_top_in: float) -> tuple[float, float]:
        """Figure coordinates of a point given in inches from the top-left corner."""
        return x_in / self.fig_w, 1.0 - y_from_top_in / self.fig_h


def _grid_layout(n_img: int, n_rows: int, labels: list[str], column_labels: list[str], captions, title: str
                 ) -> _GridLayout:
    n_stage = len(column_labels)
    cell = float(np.clip(12.0 / (n_stage + 1), 0.9, 1.6))
    font, small, pad = 10.0, 8.0, 0.04
    wrapped = [_wrap(lbl, 18) for lbl in labels]
    gutter = max(0.6, max(_text_width(w, font) for w in wrapped) + 0.25)
    longest = max(_text_width(c, font) for c in ["input"] + column_labels)
    rotate = longest > cell - 0.05
    col_title_h = (longest * math.sin(math.radians(45)) + 0.2) if rotate else 0.3
    title_h = 0.5 if title else 0.0
    caption_h, wrapped_caps = 0.0, None
    if captions is not None:
        chars = max(6, int(cell / (small * _CHAR_W)))
        wrapped_caps = [_wrap(c, chars) for c in captions]
        n_lines = max(c.count("\n") + 1 for c in wrapped_caps)
        caption_h = 0.08 + n_lines * small * 1.3 / 72.0
    block_gap = 0.25
    if n_rows == 1:  # the caption has no empty cell below it: make room in the gap
        block_gap = max(block_gap, caption_h + 0.1)
    bottom = 0.1 + (caption_h if n_rows == 1 else 0.0)
    left, right = 0.1, 0.15
    step = cell + pad
    block_h = n_rows * step
    return _GridLayout(fig_w=left + cell + gutter + n_stage * step + right,
                       fig_h=title_h + col_title_h + n_img * block_h + (n_img - 1) * block_gap + bottom,
                       cell=cell, gutter=gutter, left=left, top=title_h + col_title_h, block_h=block_h,
                       block_gap=block_gap, rotate=rotate, wrapped=wrapped, captions=wrapped_caps)


def _image_cell(fig: Figure, layout: _GridLayout, x_in: float, y_top_in: float, values: np.ndarray, cmap, low: float,
                high: float) -> None:
    """values drawn in the cell x cell square whose top-left corner is at (x_in, y_top_in), at their own aspect
    ratio and centred (as imshow in a square Axes): a figure-level image, not an Axes (an Axes per cell cost ~10 ms
    to make and draw; a run writes hundreds of cells)."""
    cell, fig_w, fig_h = layout.cell, layout.fig_w, layout.fig_h
    h, w = values.shape[:2]
    box_w, box_h = (cell, cell * h / w) if w >= h else (cell * w / h, cell)
    left_in, bottom_in = x_in + (cell - box_w) / 2, y_top_in + (cell + box_h) / 2
    box = TransformedBbox(Bbox.from_bounds(left_in / fig_w, 1.0 - bottom_in / fig_h, box_w / fig_w,
                                           box_h / fig_h), fig.transFigure)
    image = BboxImage(box, cmap=cmap, norm=Normalize(low, high), origin="upper")
    image.set_data(values)
    fig.add_artist(image)


def _input_cell(fig: Figure, layout: _GridLayout, i: int, y: float, img: np.ndarray) -> None:
    """The input image (the first row of block i), its caption, and above the first block the column's title."""
    x_input, cell = layout.left, layout.cell
    _image_cell(fig, layout, x_input, y, img[..., 0] if img.shape[-1] == 1 else img,
                "gray" if img.shape[-1] == 1 else None, 0.0, 1.0)
    if layout.captions is not None:
        fig.text(*layout.at(x_input + cell / 2, y + 1.04 * cell), layout.captions[i], ha="center", va="top",
                 fontsize=layout.small)
    if i == 0:
        fig.text(*layout.at(x_input + cell / 2, y - layout.pad_in), "input", ha="center", va="baseline",
                 fontsize=layout.font)


def _stage_cell(fig: Figure, layout: _GridLayout, x: float, y: float, shown: np.ndarray, cmap, low, high,
                label: str | None) -> None:
    """One map; "constant map" where it has nothing to rank; above the first row its stage's title."""
    cell = layout.cell
    _image_cell(fig, layout, x, y, shown, cmap, low, high)
    finite = shown[np.isfinite(shown)]
    if finite.size == 0 or finite.min() == finite.max():  # nothing to rank: correlation undefined
        fig.text(*layout.at(x + cell / 2, y + cell / 2), "constant\nmap", ha="center", va="center",
                 fontsize=layout.small, color="tab:red", fontstyle="italic",
                 bbox={"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1.5})
    if label is None:
        return
    if layout.rotate:
        fig.text(*layout.at(x + 0.3 * cell, y - 0.03 * cell), label, rotation=45, rotation_mode="anchor",
                 ha="left", va="bottom", fontsize=layout.font)
    else:
        fig.text(*layout.at(x + cell / 2, y - layout.pad_in), label, ha="center", va="baseline",
                 fontsize=layout.font)


def saliency_grid_figure(
    inputs: np.ndarray,
    maps: dict[str, np.ndarray],
    column_labels: list[str],
    mode: str,
    row_labels: dict[str, str] | None = None,
    input_captions: list[str] | None = None,
    title: str = "",
) -> Figure:
    """Paper-figure style grid (Fig. 2/3) of saliency maps (saliency_grid writes it as a PNG).

    One block per input image. Within a block, rows are methods (keys of `maps`, in order) and
    columns are the input image (first row of the block only, with its caption underneath) followed by
    one column per stage in `column_labels`. Method names sit in a gutter between the input column
    and the first stage column; stage labels are column titles above the first block.

    inputs: (N, H, W, C) floats in [0, 1], C = 1 or 3 (an (N, H, W) array is read as grayscale).
    maps[method]: (N, S, H, W) normalised maps, S = len(column_labels).
    mode: 'absolute' (values in [0, 1], gray) or 'diverging' (values in [-1, 1], 'bwr').
    """
    if mode not in ("absolute", "diverging"):
        raise ValueError(f"saliency_grid: mode must be 'absolute' or 'diverging', got {mode!r}")
    inputs, arrays, column_labels, input_captions = _grid_arrays(inputs, maps, column_labels, input_captions)
    methods = list(arrays)
    labels = [str(dict(row_labels or {}).get(m, m)) for m in methods]
    cmap, vmin, vmax = ("gray", 0.0, 1.0) if mode == "absolute" else ("bwr", -1.0, 1.0)
    layout = _grid_layout(len(inputs), len(methods), labels, column_labels, input_captions, title)
    fig = Figure(figsize=(layout.fig_w, layout.fig_h))
    fig.patch.set_facecolor("white")
    x_stage0 = layout.left + layout.cell + layout.gutter
    for i in range(len(inputs)):
        y_block = layout.top + i * (layout.block_h + layout.block_gap)
        img = np.clip(np.nan_to_num(inputs[i], nan=0.0), 0.0, 1.0)
        for r, m in enumerate(methods):
            y = y_block + r * layout.step
            if r == 0:  # the input column: the first row of the block only
                _input_cell(fig, layout, i, y, img)
            # method label, right-aligned against the first stage column
            fig.text(*layout.at(x_stage0 - 0.08, y + layout.cell / 2), layout.wrapped[r], ha="right", va="center",
                     fontsize=layout.font)
            for s in range(len(column_labels)):
                _stage_cell(fig, layout, x_stage0 + s * layout.step, y, arrays[m][i, s], cmap, vmin, vmax,
                            column_labels[s] if i == 0 and r == 0 else None)
    if title:
        fig.text(0.5, 1.0 - 0.12 / layout.fig_h, title, ha="center", va="top", fontsize=12)
    return fig


def saliency_grid(path, inputs: np.ndarray, maps: dict[str, np.ndarray], column_labels: list[str], mode: str,
                  row_labels: dict[str, str] | None = None, input_captions: list[str] | None = None,
                  title: str = "") -> None:
    """Write saliency_grid_figure(...) as a PNG to `path`."""
    _save(saliency_grid_figure(inputs, maps, column_labels, mode, row_labels, input_captions, title), path)


# Similarity curves -------------------------------------------------------------------------------
def similarity_curves(path, summary: "pd.DataFrame", metrics: list[str], title: str = "",
                      controls=()) -> None:
    """Write similarity_figure(...) as a PNG to `path`."""
    _save(similarity_figure(summary, metrics, title, controls), path)


def similarity_figure(summary: "pd.DataFrame", metrics: list[str], title: str = "", controls=()) -> Figure:
    """Paper Fig. 4 style: one panel per metric, mean similarity vs. randomization stage.

    x = stages in ascending order (evenly spaced, tick labels = `block` names), y = mean, one line per
    method (order of first appearance in `summary`) with a light band ci_low..ci_high; model-free `controls`
    are grey dashed lines without a band. NaN means are not drawn. y range [-1.05, 1.05] with a light line at
    0; one legend in a column at the right, inside the figure.
    """
    df, metrics = _validate_summary(summary, metrics, "similarity_curves")
    dup = df.duplicated(["metric", "method", "stage"])
    if dup.any():
        r = df[dup].iloc[0]
        raise ValueError(
            "similarity_curves: summary has more than one row for "
            f"(metric={r['metric']!r}, method={r['method']!r}, stage={r['stage']}); aggregate first"
        )
    stages = sorted(df["stage"].unique())
    block_of = {}
    for st, bl in zip(df["stage"], df["block"]):
        block_of.setdefault(st, bl)
    xticklabels = [block_of[s] for s in stages]
    xpos = {s: k for k, s in enumerate(stages)}
    methods = _unique_in_order(df["method"])
    methods = [m for m in methods if m not in controls] + [m for m in methods if m in controls]
    colors = _method_colors(methods)

    n_st = len(stages)
    longest = max(_text_width(t, 9) for t in xticklabels)
    if n_st > 12:
        rotation = 90
    elif n_st > 4 or longest > 0.9:
        rotation = 45
    else:
        rotation = 0

    nrows, ncols = _panel_grid(len(metrics))
    panel_w = max(4.0, 0.32 * n_st + 1.5)
    panel_h = 3.4 + (longest * (1.0 if rotation == 90 else 0.7 if rotation else 0.0))
    legend_w = max(_text_width(m, 9) for m in methods) + 0.9
    fig_w = ncols * panel_w + 0.6 + legend_w
    fig_h = max(nrows * panel_h + 0.5 + (0.4 if title else 0.0), 0.25 * len(methods) + 1.0)
    fig = Figure(figsize=(fig_w, fig_h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=all(_is_similarity(m) for m in metrics))

    for k, metric in enumerate(metrics):
        ax = axes[k // ncols][k % ncols]
        _curves(ax, df[df["metric"] == metric], methods, xpos, colors, controls)
        ax.set_title(str(metric), fontsize=11)
        _metric_axis(ax, metric, ylabel=k % ncols == 0)
        ax.set_xlim(-0.4, n_st - 0.6)
        ax.set_xticks(range(n_st))
        if rotation:
            ax.set_xticklabels(xticklabels, rotation=rotation, ha="right" if rotation == 45 else "center",
                               rotation_mode="anchor" if rotation == 45 else "default", fontsize=8)
        else:
            ax.set_xticklabels(xticklabels, fontsize=8)
        ax.grid(axis="y", color="0.92", lw=0.6)
        ax.tick_params(axis="y", labelleft=True)
    for k in range(len(metrics), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)

    handles = [Line2D([], [], **_line_style(m, j, colors, controls)) for j, m in enumerate(methods)]
    labels = [f"{m} (control)" if m in controls else m for m in methods]
    fig.legend(handles, labels, loc="outside right upper", ncol=1, fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def _curves(ax, sub, methods: list[str], xpos: dict, colors: dict, controls) -> None:
    """One panel's lines: each method's mean per stage with a light band over its interval (none for controls)."""
    ax.axhline(0.0, color="0.75", lw=0.8, zorder=0)
    for j, m in enumerate(methods):
        d = sub[sub["method"] == m].sort_values("stage")
        if d.empty:
            continue
        x = np.array([xpos[s] for s in d["stage"]], dtype=float)
        y = d["mean"].to_numpy(dtype=float)
        lo = d["ci_low"].to_numpy(dtype=float)
        hi = d["ci_high"].to_numpy(dtype=float)
        ok_band = np.isfinite(y) & np.isfinite(lo) & np.isfinite(hi)
        if ok_band.any() and m not in controls:
            ax.fill_between(x, np.where(ok_band, lo, 0.0), np.where(ok_band, hi, 0.0),
                            where=ok_band, color=colors[m], alpha=0.08, lw=0, interpolate=False)
        if np.isfinite(y).any():
            ax.plot(x, y, **_line_style(m, j, colors, controls))


def _is_similarity(metric: str) -> bool:
    return metric not in METRICS or METRICS[metric].higher_is_more_similar


def _metric_axis(ax, metric: str, ylabel: bool) -> None:
    """A similarity's panel spans [-1.05, 1.05]; a score such as eMPRT's entropy rise is scaled to its values."""
    if _is_similarity(metric):
        ax.set_ylim(-1.05, 1.05)
    if ylabel or not _is_similarity(metric):
        ax.set_ylabel("mean similarity" if _is_similarity(metric) else f"mean {metric.replace('_', ' ')}")


def _line_style(method: str, index: int, colors: dict, controls) -> dict:
    if method in controls:
        return {"color": "0.55", "linestyle": "--", "marker": _MARKERS[index % len(_MARKERS)], "ms": 3, "lw": 1.2}
    return {"color": colors[method], "marker": _MARKERS[index % len(_MARKERS)], "ms": 4, "lw": 1.5}


# Data-randomization bars -------------------------------------------------------------------------
def data_test_bars(path, summary: "pd.DataFrame", metrics: list[str], title: str = "", controls=()) -> None:
    """Paper Fig. 6 style: one panel per metric, one bar per method (height = mean).

    `summary` holds the comparison rows only (true-label vs permuted-label model): at most one row per
    (metric, method). Error bars span ci_low..ci_high; undefined (NaN) means get no bar, only an
    'n/a' mark; model-free `controls` are grey hatched bars. y range [-1.05, 1.05] with a light line at 0.
    """
    df, metrics = _validate_summary(summary, metrics, "data_test_bars")
    dup = df.duplicated(["metric", "method"])
    if dup.any():
        r = df[dup].iloc[0]
        raise ValueError(
            "data_test_bars: summary has more than one row for "
            f"(metric={r['metric']!r}, method={r['method']!r}); pass the comparison stage only"
        )
    methods = _unique_in_order(df["method"])
    colors = _method_colors(methods)
    n_m = len(methods)

    nrows, ncols = _panel_grid(len(metrics))
    longest = max(_text_width(m, 9) for m in methods)
    panel_w = max(3.2, 0.45 * n_m + 1.2)
    panel_h = 3.2 + 0.75 * longest
    fig_w = ncols * panel_w + 0.6
    fig_h = nrows * panel_h + 0.3 + (0.4 if title else 0.0)
    fig = Figure(figsize=(fig_w, fig_h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)

    x = np.arange(n_m, dtype=float)
    for k, metric in enumerate(metrics):
        ax = axes[k // ncols][k % ncols]
        sub = df[df["metric"] == metric].set_index("method")
        ax.axhline(0.0, color="0.6", lw=0.8, zorder=0)
        for j, m in enumerate(methods):
            if m not in sub.index:
                continue
            mean = float(sub.at[m, "mean"])
            lo = float(sub.at[m, "ci_low"])
            hi = float(sub.at[m, "ci_high"])
            if not np.isfinite(mean):
                ax.text(x[j], 0.03, "n/a", ha="center", va="bottom", fontsize=7, color="0.4")
                continue
            control = m in controls
            ax.bar(x[j], mean, width=0.7, color="0.8" if control else colors[m], edgecolor="black", lw=0.5,
                   hatch="//" if control else None)
            if np.isfinite(lo) and np.isfinite(hi):
                yerr = np.array([[max(mean - lo, 0.0)], [max(hi - mean, 0.0)]])
                ax.errorbar(x[j], mean, yerr=yerr, fmt="none", ecolor="black", capsize=3, lw=1)
        ax.set_title(str(metric), fontsize=11)
        _metric_axis(ax, metric, ylabel=k % ncols == 0)
        ax.set_xlim(-0.6, n_m - 0.4)
        ax.set_xticks(x)
        ax.set_xticklabels(methods, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
        ax.grid(axis="y", color="0.92", lw=0.6)
        ax.set_axisbelow(True)
    for k in range(len(metrics), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=12)
    _save(fig, path)
