"""Self-contained HTML pages (Jinja2 templates in sanity_cli/templates/): `report.html` of a run and of a sweep,
built from the files the run or sweep wrote, so `sanity report DIR` can (re)build them for old directories too.

Figures are embedded as data URIs; the only links are to the CSV and JSON files beside the page. No network
fetch, no external CSS or JavaScript: the page opens offline and prints.
"""

from __future__ import annotations

import base64
import json
import shlex
from pathlib import Path

import pandas as pd

from . import sanity_tests
from .errors import SanityError
from .io import write_text
from .metrics import METRICS
from .report import format_interval

PAGE = "report.html"
RUN_FILES = ("verdict.csv", "summary.csv", "metrics.csv", "null.csv", "edges.csv", "models.csv", "manifest.json")


def _environment():
    from jinja2 import Environment, PackageLoader

    return Environment(loader=PackageLoader("sanity_cli", "templates"), autoescape=True,  # every value escaped
                       trim_blocks=True, lstrip_blocks=True)


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _number(value, digits: int = 3) -> str:
    return "" if pd.isna(value) else f"{value:.{digits}f}"


def verdict_rows(verdict: pd.DataFrame) -> list[dict]:
    """The verdict table as the page shows it: the console's order (controls last), numbers rounded as there."""
    return [{"method": row.method, "role": row.role, "similarity": _number(row.similarity),
             "ci": format_interval(row.ci_low, row.ci_high), "null": _number(row.null_similarity),
             "null_ci": format_interval(row.null_ci_low, row.null_ci_high), "n": int(row.n), "verdict": row.verdict,
             "reason": row.reason if isinstance(row.reason, str) else ""}
            for row in verdict.itertuples()]


def grid_images(run_dir: Path, mode: str) -> list[Path]:
    """grid_<mode>_<K>.png in K order; a run from before one grid per image has grid_<mode>.png."""
    import re

    numbered = [(int(m.group(1)), p) for p in run_dir.glob(f"grid_{mode}_*.png")
                if (m := re.fullmatch(rf"grid_{mode}_(\d+)\.png", p.name))]
    if numbered:
        return [p for _, p in sorted(numbered)]
    return [run_dir / f"grid_{mode}.png"] if (run_dir / f"grid_{mode}.png").exists() else []


def run_page(run_dir: Path) -> Path:
    """Write run_dir/report.html from the finished run's files; returns its path."""
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").exists() or not (run_dir / "verdict.csv").exists():
        raise SanityError(f"{run_dir} holds no finished sanity run (manifest.json and verdict.csv); "
                          f"give a run, sweep or suite directory")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    config = manifest["config"]
    verdict = pd.read_csv(run_dir / "verdict.csv")
    models = pd.read_csv(run_dir / "models.csv") if (run_dir / "models.csv").exists() else pd.DataFrame()
    captions = manifest.get("captions") or [f"image #{i}, class {t}" for i, t in
                                            zip(manifest.get("explained_images", []), manifest.get("targets", []))]
    grids = {mode: [{"src": data_uri(path), "caption": captions[k] if k < len(captions) else path.stem}
                    for k, path in enumerate(grid_images(run_dir, mode))] for mode in ("absolute", "diverging")}
    similarity = run_dir / "similarity.png"
    test = config["test"]["name"]
    spec = sanity_tests.get(test) if test in sanity_tests.TESTS else sanity_tests.get("cascading")
    source = manifest.get("data_provenance", {}).get("source", "")
    header = [("model", config["model"]["name"]), ("data", f"{config['data']['name']} ({source})"),
              ("test", test), ("budget", config["budget"]["name"]), ("seed", manifest.get("seed")),
              ("images explained", len(manifest.get("explained_images", []))),
              ("device", manifest.get("device", "")), ("started", manifest.get("started", "")),
              ("time taken", f"{manifest.get('wall_seconds', float('nan')):.1f} s"),
              ("versions", ", ".join(f"{k} {v}" for k, v in sorted(manifest.get("versions", {}).items()))),
              ("git commit", manifest.get("git_commit", ""))]
    argv = manifest.get("command") or ["sanity", "run"]
    counts = verdict["verdict"].value_counts()
    page = _environment().get_template("run.html.j2").render(
        title=f"sanity: {config['model']['name']} on {config['data']['name']}, {test} test",
        summary_line=", ".join(f"{counts[v]} {v}" for v in ("PASS", "FAIL", "INCONCLUSIVE", "reference")
                               if v in counts),
        header=header, command=shlex.join(["sanity", *argv[1:]] if argv[0] == "sanity" else argv),
        verdict_heading=spec.heading(config["verdict"]["metric"], config["verdict"]["rule"],
                                     config["verdict"]["threshold"], config["test"],
                                     combined=[m for m in config["metric"] if METRICS[m].higher_is_more_similar]
                                     if config["verdict"]["metric"] == "all" else None),
        verdict=verdict_rows(verdict),
        compared=f"compared: {verdict['compared'].iloc[0]}" if len(verdict) else "",
        similarity=data_uri(similarity) if similarity.exists() else None,
        similarity_caption=(f"{verdict['compared'].iloc[0] if len(verdict) else test}: mean similarity per method "
                            f"with its 95% interval" if spec.judged == "single_stage" else
                            "mean similarity per randomization stage with its 95% interval; controls grey dashed"),
        columns_caption=("input, then the reference maps and the compared maps" if spec.judged == "single_stage"
                         else "input, trained model, then each randomized block"),
        grids=grids if grids["absolute"] or grids["diverging"] else None,
        models_columns=list(models.columns), models=[[_cell(v) for v in row] for row in models.itertuples(index=False)],
        self_checks=[(k, v) for k, v in manifest.get("self_checks", {}).items() if not isinstance(v, dict)],
        files=[name for name in RUN_FILES if (run_dir / name).exists()],
        edges=edge_section(run_dir, config["verdict"]["metric"], verdict))
    write_text(run_dir / PAGE, page)
    return run_dir / PAGE


def edge_section(run_dir: Path, verdict_metric: str, verdict: pd.DataFrame) -> dict | None:
    """The page's edge similarity table from edges.csv (None for a run without one): per method, Sobel vs the map
    and vs |map - median|, trained and at the last stage, beside the null."""
    from . import edges

    path = run_dir / "edges.csv"
    table = pd.read_csv(path) if path.exists() else None
    metric = edges.shown_metric(table, verdict_metric)
    if table is None or metric is None:
        return None
    last, rows = edges.page_rows(table, metric)
    roles = dict(zip(verdict["method"], verdict["role"])) if "role" in verdict else {}
    return {"metric": metric, "last": last, "rows": [dict(row, role=roles.get(row["method"], "method"))
                                                     for row in rows]}


def read_table(path: Path) -> pd.DataFrame:
    """A CSV table; a night whose every job failed wrote one without columns."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=["job", "method", "role", "similarity", "verdict"])


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:.4g}"
    return str(value)


def jobs_page(directory: Path, verdict: pd.DataFrame, title: str, explanation: str, files: list[str],
              job_columns: list[str] = (), failed: list[tuple[str, str]] = ()) -> Path:
    """A page with one row per job and method (the verdicts side by side), each job linking to its own page; for
    a sweep (sweep_verdict.csv) or a night of `sanity reproduce` (suite_verdict.csv)."""
    directory = Path(directory)
    rows = []
    for row in verdict.itertuples():
        job_page = next((p for p in (directory / str(row.job) / PAGE,) if p.exists()), None)
        rows.append({"job": row.job, "page": f"{row.job}/{PAGE}" if job_page else None,
                     "columns": [getattr(row, c) for c in job_columns],
                     **verdict_rows(pd.DataFrame([row._asdict()]))[0]})
    counts = verdict["verdict"].value_counts() if len(verdict) else pd.Series(dtype=int)
    page = _environment().get_template("jobs.html.j2").render(
        title=title, explanation=explanation, job_columns=list(job_columns), rows=rows, failed=list(failed),
        board=leaderboard(verdict, {row["job"]: row["page"] for row in rows}),
        summary_line=f"{verdict['job'].nunique() if len(verdict) else 0} jobs; " + ", ".join(
            f"{counts[v]} {v}" for v in ("PASS", "FAIL", "INCONCLUSIVE", "reference") if v in counts),
        files=[name for name in files if (directory / name).exists()])
    write_text(directory / PAGE, page)
    return directory / PAGE


def leaderboard(verdict: pd.DataFrame, pages: dict) -> dict | None:
    """The methods x jobs table of a suite or sweep (`sanity reproduce leaderboard`): per method and job its verdict
    and similarity / null, linking to the job's page; methods ordered by PASS count, then by FAIL count (fewest
    first), controls last. None for a single job."""
    if not len(verdict) or verdict["job"].nunique() < 2:
        return None
    jobs = list(dict.fromkeys(verdict["job"]))
    cells: dict[str, dict] = {}
    for row in verdict.itertuples():
        cell = {"verdict": row.verdict, "value": f"{_number(row.similarity)} / {_number(row.null_similarity)}",
                "metric": getattr(row, "metric", ""), "page": pages.get(row.job)}
        cells.setdefault(row.method, {"role": row.role, "cells": {}})["cells"][row.job] = cell
    score = {m: (c["role"] == "control", -sum(x["verdict"] == "PASS" for x in c["cells"].values()),
                 sum(x["verdict"] == "FAIL" for x in c["cells"].values())) for m, c in cells.items()}
    methods = sorted(cells, key=lambda m: (*score[m], m))
    return {"jobs": jobs, "rows": [{"method": m, "role": cells[m]["role"], "passes": -score[m][1],
                                    "cells": [cells[m]["cells"].get(job) for job in jobs]} for m in methods]}


def sweep_page(sweep_dir: Path) -> Path:
    """The sweep's page from its sweep_verdict.csv (written by sweep.write_sweep_tables), each job linking to its
    page (built here if a job has none yet)."""
    from .rundir import failed_jobs

    sweep_dir = Path(sweep_dir)
    for manifest in sweep_dir.rglob("manifest.json"):
        if (manifest.parent / "verdict.csv").exists():
            run_page(manifest.parent)
    table = sweep_dir / "sweep_verdict.csv"
    verdict = pd.read_csv(table) if table.exists() else pd.DataFrame(columns=["job", "verdict"])
    return jobs_page(sweep_dir, verdict, f"sanity sweep: {sweep_dir.name}",
                     "Every job's verdicts side by side (each job's name links to its own page).",
                     ["sweep_verdict.csv", "sweep_summary.csv", "multirun.yaml"],
                     ["model", "data", "test", "budget", "seed"], failed_jobs(sweep_dir))


def suite_page(night_dir: Path) -> Path:
    """The page of one `sanity reproduce` run (a night): its suite_verdict.csv, each job linking to its page."""
    night_dir = Path(night_dir)
    for job in night_dir.iterdir():
        if job.is_dir() and (job / "verdict.csv").exists() and (job / "manifest.json").exists():
            run_page(job)
    verdict = read_table(night_dir / "suite_verdict.csv")
    return jobs_page(night_dir, verdict, f"sanity reproduce: {night_dir.parent.name}, {night_dir.name}",
                     "Every job's verdicts in this run of the suite (each job's name links to its own page).",
                     ["suite_verdict.csv", "reproduce.log"])


def build(directory: Path) -> list[Path]:
    """`sanity report DIR`: (re)build the page(s) of a finished run, a sweep, a reproduce run (night), or a suite's
    directory (every night's page and history.html)."""
    directory = Path(directory).expanduser()
    if (directory / "manifest.json").exists() and (directory / "verdict.csv").exists():
        return [run_page(directory)]
    if (directory / "suite_verdict.csv").exists():
        return [suite_page(directory)]
    if (directory / "sweep_verdict.csv").exists() or (directory / "multirun.yaml").exists():
        return [sweep_page(directory)]
    nights = [p for p in directory.glob("*/suite_verdict.csv") if not p.parent.is_symlink()]
    if nights:  # a suite's directory: every night's page and the history
        return [suite_page(p.parent) for p in sorted(nights)] + [history_page(directory)]
    if (directory / "units").is_dir() or (directory / "verdict.csv").exists():
        raise SanityError(f"{directory} is an unfinished run (no manifest.json: it stopped before it finished "
                          f"writing); finish it with its sanity run command and hydra.run.dir={directory} (or "
                          f"resume=true), then build its page")
    raise SanityError(f"{directory} holds no finished sanity run, sweep or reproduce run (no verdict.csv, "
                      f"sweep_verdict.csv or */suite_verdict.csv); give one of those directories")


HISTORY = "history.html"


def history_page(suite_root: Path) -> Path:
    """suite_root/history.html: each job's panel plots every method's similarity over the nights of
    `sanity reproduce` (its suite_verdict.csv files), and every verdict change between consecutive nights is
    ringed in red and listed."""
    import io

    import numpy as np
    from matplotlib.figure import Figure

    suite_root = Path(suite_root)
    nights = sorted(p for p in suite_root.iterdir() if p.is_dir() and not p.is_symlink()
                    and (p / "suite_verdict.csv").exists())
    if not nights:
        raise SanityError(f"{suite_root} holds no finished sanity reproduce run (no */suite_verdict.csv)")
    columns = ["job", "method", "role", "similarity", "verdict"]
    frames = [read_table(n / "suite_verdict.csv").assign(night=n.name) for n in nights]
    table = pd.concat([f for f in frames if set(columns) <= set(f.columns) and len(f)] or
                      [pd.DataFrame(columns=columns + ["night"])], ignore_index=True)
    order = {n.name: k for k, n in enumerate(nights)}
    table["x"] = table["night"].map(order)
    table = table.sort_values(["job", "method", "x"])
    table["before"] = table.groupby(["job", "method"])["verdict"].shift()
    changed = table[table["before"].notna() & (table["before"] != table["verdict"])]
    jobs = list(dict.fromkeys(table["job"])) or ["(no finished job yet)"]
    from .plots import _method_colors

    colors = _method_colors(sorted(set(table.loc[table["role"] != "control", "method"])))
    fig = Figure(figsize=(max(6.0, 1.0 + 0.6 * len(nights)) + 2.5, 3.0 * len(jobs)), layout="constrained")
    axes = fig.subplots(len(jobs), 1, squeeze=False)[:, 0]
    for ax, job in zip(axes, jobs):
        for method, rows in table[table["job"] == job].groupby("method", sort=False):
            control = (rows["role"] == "control").all()
            ax.plot(rows["x"], rows["similarity"], marker="o", ms=4, label=f"{method} (control)" if control else method,
                    ls="--" if control else "-", color="0.55" if control else colors[method])
        ring = changed[changed["job"] == job]
        ax.scatter(ring["x"], ring["similarity"], s=160, facecolors="none", edgecolors="red", lw=1.5, zorder=5,
                   label="verdict changed" if len(ring) else None)
        ax.set_title(job, fontsize=11)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xticks(range(len(nights)))
        ax.set_xticklabels([n.name for n in nights], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("similarity")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, facecolor="white")
    figure = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    page = _environment().get_template("history.html.j2").render(
        title=f"sanity reproduce {suite_root.name}: history", figure=figure,
        summary_line=f"{len(nights)} nights, {len(jobs)} jobs, {len(changed)} verdict changes",
        caption="similarity after randomization per method and night; red rings: the verdict changed from the "
                "night before",
        changes=[{"night": r.night, "job": r.job, "method": r.method, "before": r.before, "after": r.verdict,
                  "similarity": "" if np.isnan(r.similarity) else f"{r.similarity:.3f}"}
                 for r in changed.itertuples()],
        nights=[n.name for n in nights if (n / PAGE).exists()])
    write_text(suite_root / HISTORY, page)
    return suite_root / HISTORY
