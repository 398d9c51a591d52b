"""Compare: one stage's maps against the reference maps (paper Sec. 3, the similarity metrics), as a typed
`StageResult` that is also the resumable unit of work (its own npz format, versioned: a unit of another format is
recomputed), and the `Comparison` that collects every stage in order into the run's tables and grids.

Edge similarity (paper Fig. 1 and Sec. 5): each method's maps are also compared, at every stage, with the
model-free edge maps of the same inputs (Sobel, Canny; sanity_cli/edges.py), with every similarity metric, in two
views: the map itself (each metric's own normalisation, e.g. spearman_abs: |map|), and its departure from its
typical value, |map - median(map)| (`departure`). The second states Sec. 5's theory: a single ReLU layer's
gradient is constant over flat regions and changes only near edges, so its edges show as departures from the
flat-region value, which may itself be large (then |map| ranks the flat regions first).
"""

from __future__ import annotations

import functools
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from . import metrics, report
from .checks import SelfChecks, finite_rows
from .invariance import max_relative_difference
from .units import UnitStore, stage_unit

UNIT_FORMAT = 3  # 3: with the edge similarities (2: without; 1: the f-string keys); another format is recomputed
EDGE_VIEWS = ("map", "departure")  # the map as it is; |map - median(map)|
EDGE_COLUMNS = ["model", "test", "stage", "block", "method", "edge", "view", "metric", "repeat", "image", "value",
                "undefined"]
EDGE_NULL_COLUMNS = ["method", "edge", "view", "metric", "image", "other_image", "value", "undefined"]


@dataclass(frozen=True)
class Stage:
    """One column of the experiment: stage 0 is the reference (trained / true-label model)."""

    index: int
    block: str                                     # the paper's name of what was randomized at this stage
    blocks: tuple = ()                             # blocks to re-initialise on top of the previous stage
    restore_first: bool = False                    # independent test: back to trained weights first


@dataclass
class MethodResult:
    """One method at one stage: per image, whether a map was NaN/Inf, its largest relative change from the
    reference (input invariance), each metric's value and whether it was undefined; the normalised maps shown in
    the grids (the first grid_images images)."""

    nonfinite: np.ndarray
    max_change: np.ndarray
    values: dict[str, np.ndarray]
    undefined: dict[str, np.ndarray]
    absolute: np.ndarray
    diverging: np.ndarray
    edges: dict[str, np.ndarray] = field(default_factory=dict)            # "edge|view|metric" -> per image
    edges_undefined: dict[str, np.ndarray] = field(default_factory=dict)

    FIELDS = ("nonfinite", "max_change", "absolute", "diverging")


@dataclass
class StageResult:
    """Every method's results at one stage."""

    methods: dict[str, MethodResult] = field(default_factory=dict)

    def to_npz(self) -> dict[str, np.ndarray]:
        """The unit's arrays: per method k its name, its per-image fields, and its metrics' names with their
        values and undefined flags as (metrics, images) arrays."""
        arrays: dict[str, np.ndarray] = {"format": np.array(UNIT_FORMAT)}
        for k, (name, result) in enumerate(self.methods.items()):
            arrays[f"{k}.method"] = np.array(name)
            arrays[f"{k}.metrics"] = np.array(list(result.values), dtype=str)
            arrays[f"{k}.values"] = np.array([result.values[m] for m in result.values], np.float64)
            arrays[f"{k}.undefined"] = np.array([result.undefined[m] for m in result.values], bool)
            for part in MethodResult.FIELDS:
                arrays[f"{k}.{part}"] = getattr(result, part)
            arrays[f"{k}.edge_keys"] = np.array(list(result.edges), dtype=str)
            arrays[f"{k}.edge_values"] = np.array([result.edges[e] for e in result.edges], np.float64)
            arrays[f"{k}.edge_undefined"] = np.array([result.edges_undefined[e] for e in result.edges], bool)
        return arrays

    @classmethod
    def from_npz(cls, arrays: Mapping[str, np.ndarray]) -> "StageResult | None":
        """The unit's StageResult, or None when it is of another format (then it is computed again)."""
        if "format" not in arrays or int(arrays["format"]) != UNIT_FORMAT:
            return None
        result, k = cls(), 0
        while f"{k}.method" in arrays:
            names = [str(m) for m in arrays[f"{k}.metrics"]]
            edges = [str(e) for e in arrays[f"{k}.edge_keys"]]
            result.methods[str(arrays[f"{k}.method"])] = MethodResult(
                nonfinite=arrays[f"{k}.nonfinite"], max_change=arrays[f"{k}.max_change"],
                values=dict(zip(names, arrays[f"{k}.values"])), undefined=dict(zip(names, arrays[f"{k}.undefined"])),
                absolute=arrays[f"{k}.absolute"], diverging=arrays[f"{k}.diverging"],
                edges=dict(zip(edges, arrays[f"{k}.edge_values"])),
                edges_undefined=dict(zip(edges, arrays[f"{k}.edge_undefined"])))
            k += 1
        return result


def compare_where_finite(reference: np.ndarray, other: np.ndarray, metric: str,
                         params: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """metrics.compare of each pair of maps; a pair with NaN/Inf in either map is never compared: its
    similarity is undefined (NaN)."""
    finite = finite_rows(reference) & finite_rows(other)
    values, undefined = np.full(len(finite), np.nan), np.ones(len(finite), bool)
    if finite.any():
        values[finite], undefined[finite] = metrics.compare(reference[finite], other[finite], metric, **params)
    return values, undefined


def departure(maps: np.ndarray) -> np.ndarray:
    """|a - median(a)| per image and channel (median over the pixels): how far each pixel lies from the map's
    typical value. A map constant over flat regions and different near edges (Sec. 5's one-layer ReLU gradient)
    becomes an edge map; where the median is 0 (MNIST's black background) it is |a|."""
    maps = np.asarray(maps, np.float64)
    return np.abs(maps - np.median(maps, axis=(1, 2), keepdims=True))


def edge_metrics(metric_params: Mapping[str, Mapping]) -> dict[str, Mapping]:
    """The configured similarities (not eMPRT's entropy rise, a score of two maps of the same kind)."""
    return {m: p for m, p in metric_params.items() if metrics.get(m).higher_is_more_similar}


def compare_with_edges(maps: np.ndarray, edges: Mapping[str, np.ndarray], metric_params: Mapping[str, Mapping]
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per "edge|view|metric": the similarity of each map with the edge map of its row (same input, or, for the
    null, another image), and whether it was undefined; views: EDGE_VIEWS."""
    values: dict[str, np.ndarray] = {}
    undefined: dict[str, np.ndarray] = {}
    if not edges:
        return values, undefined
    for view, shown in (("map", maps), ("departure", departure(maps))):
        for edge, edge_maps in edges.items():
            for metric, params in edge_metrics(metric_params).items():
                key = f"{edge}|{view}|{metric}"
                values[key], undefined[key] = compare_where_finite(edge_maps, shown, metric, params)
    return values, undefined


def compare_stage(reference: Mapping[str, np.ndarray], maps: Mapping[str, np.ndarray],
                  metric_params: Mapping[str, Mapping], grid_images: int,
                  edges: Mapping[str, np.ndarray] | None = None) -> StageResult:
    """One stage's results: per method and metric the similarity of each image's map with its reference map and
    whether it was undefined, plus the normalised maps shown in the grids; with `edges` ({edge: maps of the same
    inputs}) each map's similarity with them too (compare_with_edges)."""
    result = StageResult()
    for name, explained in maps.items():
        values, undefined = {}, {}
        for metric, params in metric_params.items():
            values[metric], undefined[metric] = compare_where_finite(reference[name], explained, metric, params)
            values[metric] = np.asarray(values[metric], np.float64)
            undefined[metric] = np.asarray(undefined[metric], bool)
        shown = np.where(np.isfinite(explained), explained, 0.0)[:grid_images]
        edge_values, edge_undefined = compare_with_edges(explained, edges or {}, metric_params)
        result.methods[name] = MethodResult(
            nonfinite=~(finite_rows(reference[name]) & finite_rows(explained)),
            max_change=max_relative_difference(reference[name], explained), values=values, undefined=undefined,
            absolute=metrics.normalize_absolute(shown), diverging=metrics.normalize_diverging(shown),
            edges=edge_values, edges_undefined=edge_undefined)
    return result


class Comparison:
    """Collects every stage's results and the normalised maps shown in the grids. Each stage is one unit of work,
    saved as it finishes and skipped when a killed run is resumed; stages are compared on the store's worker
    thread while the next one is explained."""

    def __init__(self, names: list[str], metric_params: Mapping[str, Mapping], image_ids: np.ndarray,
                 units: UnitStore, checks: SelfChecks, grid_images: int, keep_maps: bool = False,
                 edges: Mapping[str, np.ndarray] | None = None):
        self.names = list(names)
        self.edges = dict(edges or {})  # {edge: the edge maps of the explained inputs} (edge similarity)
        self.edge_rows: list[tuple] = []  # (stage, block, method, edge, view, metric, repeat, values, undefined)
        self.metric_params = dict(metric_params)
        self.image_ids = image_ids
        self.units, self.checks, self.grid_images = units, checks, grid_images
        self.keep_maps = keep_maps  # every image's normalised map at every stage (check()'s Result.maps)
        self.all_maps: dict[str, list[np.ndarray]] = {name: [] for name in self.names}
        self.reference: dict[str, np.ndarray] = {}
        self.rows: list[tuple] = []  # (stage, block, method, metric, repeat, values, undefined)
        self.grid_abs: dict[str, list[np.ndarray]] = {name: [] for name in self.names}
        self.grid_div: dict[str, list[np.ndarray]] = {name: [] for name in self.names}
        self.stage_labels: list[str] = []
        self.max_difference: dict[str, float] = {}  # input invariance: largest relative map change per method
        self._pending: list[tuple[Stage, int, Future]] = []

    def set_reference(self, stage: Stage, explain: Callable[[], dict]) -> None:
        """The reference maps (stage 0), explained now or loaded from a finished unit. A new reference is saved
        on the worker thread, before stage 0's own unit."""
        saved = self.units.load("reference")
        first = None
        if saved is None or any(name not in saved for name in self.names):
            saved = explain()
            first = functools.partial(self.units.save, "reference", saved)
        self.reference = {name: saved[name] for name in self.names}
        self.add(stage, 0, lambda: self.reference, first)

    def add(self, stage: Stage, repeat: int, explain: Callable[[], dict], first=None) -> None:
        """Compare the stage's maps (explain() is called only when the unit is not finished yet). The comparison
        and the unit's file (after first(), when given) are made on the store's worker thread while the caller
        goes on to the next stage; `finish` records every stage, in order."""
        name = stage_unit(stage.index, repeat)
        saved = self.units.load(name)
        unit = StageResult.from_npz(saved) if saved is not None else None
        if unit is None:
            explained = explain()

            def compute():
                if first is not None:
                    first()
                return self._compare(explained, repeat).to_npz()

            job = self.units.finish_later(name, compute)
        else:
            if first is not None:  # the unit survived but what comes first did not (a damaged reference)
                first()
            job = Future()
            job.set_result(saved)
        self._pending.append((stage, repeat, job))

    def _compare(self, explained: Mapping[str, np.ndarray], repeat: int) -> StageResult:
        if self.keep_maps and repeat == 0:
            for method, maps in explained.items():
                self.all_maps[method].append(metrics.normalize_absolute(np.where(np.isfinite(maps), maps, 0.0)))
        return compare_stage(self.reference, explained, self.metric_params, self.grid_images, self.edges)

    def finish(self) -> "Comparison":
        """Wait for the stages compared in the background and record their rows, checks and grids in order."""
        pending, self._pending = self._pending, []
        for stage, repeat, job in pending:
            unit = StageResult.from_npz(job.result())
            assert unit is not None, "a unit just computed or read is of the current format"
            self._record(stage, repeat, unit)
        return self

    def _record(self, stage: Stage, repeat: int, unit: StageResult) -> None:
        for method in self.names:
            result = unit.methods[method]
            self.checks.record_nonfinite(method, int(result.nonfinite.sum()))
            for metric in self.metric_params:
                self.rows.append((stage.index, stage.block, method, metric, repeat, result.values[metric],
                                  result.undefined[metric]))
            for key, values in result.edges.items():
                self.edge_rows.append((stage.index, stage.block, method, *key.split("|"), repeat, values,
                                       result.edges_undefined[key]))
            if stage.index > 0:
                changes = result.max_change
                self.max_difference[method] = max(self.max_difference.get(method, 0.0),
                                                  float(np.max(np.where(np.isnan(changes), np.inf, changes))))
            if repeat == 0:
                self.grid_abs[method].append(result.absolute)
                self.grid_div[method].append(result.diverging)
        if repeat == 0:
            self.stage_labels.append(stage.block)

    def table(self, model: str, test: str) -> pd.DataFrame:
        """One row per stage, method, metric, repeat and image (report.METRIC_COLUMNS), made in one go."""
        if not self.rows:
            return pd.DataFrame(columns=report.METRIC_COLUMNS)
        n, columns = len(self.image_ids), list(zip(*self.rows))
        per_image = {name: np.repeat(np.asarray(values, dtype=object if name in ("block", "method", "metric")
                                                else np.int64), n)
                     for name, values in zip(("stage", "block", "method", "metric", "repeat"), columns[:5])}
        return pd.DataFrame({"model": model, "test": test, **per_image,
                             "image": np.tile(self.image_ids, len(self.rows)),
                             "value": np.concatenate(columns[5]).astype(np.float64),
                             "undefined": np.concatenate(columns[6]).astype(bool)})[report.METRIC_COLUMNS]

    def grids(self, mode: str) -> dict[str, np.ndarray]:
        source = self.grid_abs if mode == "absolute" else self.grid_div
        return {name: np.stack(stages, axis=1) for name, stages in source.items()}

    def null_table(self, seed: int) -> pd.DataFrame:
        """The null's raw values: each method's trained-model maps of two different images, for n // 2 disjoint
        seeded image pairs (report.null_pairs), for every metric (eMPRT's entropy rise too: from one image's map
        to another's)."""
        first, second = report.null_pairs(len(self.image_ids), seed)
        if not len(first):  # a single image has no pair
            return pd.DataFrame(columns=report.NULL_COLUMNS)
        frames = []
        for method in self.names:
            maps = self.reference[method]
            for metric, params in self.metric_params.items():
                values, undefined = compare_where_finite(maps[first], maps[second], metric, params)
                frames.append(pd.DataFrame({"method": method, "metric": metric, "image": self.image_ids[first],
                                            "other_image": self.image_ids[second], "value": values,
                                            "undefined": undefined}))
        return pd.concat(frames, ignore_index=True)[report.NULL_COLUMNS]


    def edge_table(self, model: str, test: str) -> pd.DataFrame:
        """The edge similarities, one row per stage, method, edge, view, metric, repeat and image (EDGE_COLUMNS)."""
        rows = [(stage, block, method, edge, view, metric, repeat, image, value, bad)
                for stage, block, method, edge, view, metric, repeat, values, undefined in self.edge_rows
                for image, value, bad in zip(self.image_ids, values, undefined)]
        table = pd.DataFrame(rows, columns=EDGE_COLUMNS[2:])
        table.insert(0, "test", test)
        table.insert(0, "model", model)
        return table.astype({"value": np.float64, "undefined": bool})

    def edge_null_table(self, seed: int) -> pd.DataFrame:
        """The edge similarity's null: each method's trained-model map of one image against the edge map of
        another, for the null's disjoint image pairs (report.null_pairs), per edge, view and metric."""
        first, second = report.null_pairs(len(self.image_ids), seed)
        frames = []
        for method in self.names if len(first) and self.edges else ():
            values, undefined = compare_with_edges(self.reference[method][first],
                                                   {edge: maps[second] for edge, maps in self.edges.items()},
                                                   self.metric_params)
            for key in values:
                edge, view, metric = key.split("|")
                frames.append(pd.DataFrame({"method": method, "edge": edge, "view": view, "metric": metric,
                                            "image": self.image_ids[first], "other_image": self.image_ids[second],
                                            "value": values[key], "undefined": undefined[key]}))
        if not frames:
            return pd.DataFrame(columns=EDGE_NULL_COLUMNS)
        return pd.concat(frames, ignore_index=True).astype({"value": np.float64, "undefined": bool})
