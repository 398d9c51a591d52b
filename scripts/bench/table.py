"""Benchmark rows, the ratios between them, and the CSV / Markdown output."""

from __future__ import annotations

import csv
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

COLUMNS = ["workload", "system", "batch_size", "items", "item", "wall_s_median", "wall_s_min", "wall_s_max",
           "items_per_s", "ratio_to_limit", "ratio_peer_to_ours", "peak_rss_mb", "peak_numpy_mb", "status", "note"]
LIMIT = "limit"


@dataclass
class Row:
    workload: str
    system: str
    batch_size: int | str = ""
    items: int | str = ""
    item: str = "image"
    wall_s_median: float | str = ""
    wall_s_min: float | str = ""
    wall_s_max: float | str = ""
    items_per_s: float | str = ""
    ratio_to_limit: float | str = ""
    ratio_peer_to_ours: float | str = ""
    peak_rss_mb: float | str = ""
    peak_numpy_mb: float | str = ""
    status: str = "ok"
    note: str = ""
    role: str = field(default="peer", repr=False)  # limit | ours | peer | info (not written)


def timed_row(workload: str, system: str, role: str, times: list[float], items: int, *, item: str = "image",
              batch_size="", note: str = "", peak_rss_mb="", peak_numpy_mb="") -> Row:
    median = statistics.median(times)
    return Row(workload, system, batch_size, items, item, median, min(times), max(times),
               items / median if median > 0 else float("inf"), peak_rss_mb=peak_rss_mb,
               peak_numpy_mb=peak_numpy_mb, note=note, role=role)


def missing_row(workload: str, system: str, status: str, note: str = "") -> Row:
    return Row(workload, system, status=status, note=note, role="peer")


def add_ratios(rows: list[Row]) -> list[Row]:
    """ratio_to_limit = median / the workload's limit median (ours and peers); ratio_peer_to_ours = peer median /
    ours median (peers only)."""
    by_workload: dict[str, dict[str, Row]] = {}
    for row in rows:
        if row.role in (LIMIT, "ours") and row.status == "ok":
            by_workload.setdefault(row.workload, {})[row.role] = row
    for row in rows:
        if row.status != "ok" or row.wall_s_median == "":
            continue
        ref = by_workload.get(row.workload, {})
        if row.role in ("ours", "peer") and LIMIT in ref:
            row.ratio_to_limit = row.wall_s_median / ref[LIMIT].wall_s_median
        if row.role == "peer" and "ours" in ref:
            row.ratio_peer_to_ours = row.wall_s_median / ref["ours"].wall_s_median
    return rows


def _fmt(value, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def write_csv(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: (f"{getattr(row, c):.6g}" if isinstance(getattr(row, c), float)
                                 else getattr(row, c)) for c in COLUMNS})
    os.replace(tmp, path)


def markdown_table(rows: list[Row]) -> str:
    shown = ["workload", "system", "batch_size", "items", "wall_s_median", "wall_s_min", "wall_s_max",
             "items_per_s", "ratio_to_limit", "ratio_peer_to_ours", "peak_rss_mb", "status"]
    head = ["workload", "system", "batch", "items", "median s", "min s", "max s", "items/s", "/limit",
            "peer/ours", "peak RSS MB", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(getattr(row, c)) for c in shown) + " |")
    return "\n".join(lines)


def write_markdown(rows: list[Row], targets: list[str], checks: list[str], context: dict, path: Path) -> None:
    notes = [f"- **{r.workload} / {r.system}**: {r.note}" for r in rows if r.note]
    text = "\n".join([
        f"# sanity benchmark ({context.get('mode', '?')})", "",
        " ".join(f"{k}: {v};" for k, v in context.items() if k != "mode"), "",
        markdown_table(rows), "",
        "`/limit` = wall time / the limit's wall time (raw batched forward+backward passes in one tf.function, "
        "best batch size); `peer/ours` = peer wall time / sanity's wall time (> 1: sanity is faster).", "",
        "## Targets", "", *targets, "",
        "## Correctness checks (before timing)", "", *[f"- {c}" for c in checks], "",
        "## Notes", "", *notes, ""])
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
