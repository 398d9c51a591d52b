"""After a Hydra sweep (-m): one table over all jobs, `sweep_summary.csv` and `sweep_verdict.csv`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback

from .io import atomic_path
from .report import format_verdict
from .rundir import failed_jobs

FAILED_JOBS: list[str] = []   # set after a sweep: the jobs that failed (read by the CLI for its exit code)


def job_columns(run_dir: Path) -> dict:
    config = json.loads((run_dir / "manifest.json").read_text())["config"]
    return {"job": run_dir.name, "model": config["model"]["name"], "data": config["data"]["name"],
            "test": config["test"]["name"], "budget": config["budget"]["name"], "seed": config["seed"]}


def combine(sweep_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every finished job's summary and verdict under sweep_dir, with the job's model/data/test/seed."""
    summaries, verdicts = [], []
    for manifest in sorted(sweep_dir.rglob("manifest.json")):
        run_dir = manifest.parent
        if not (run_dir / "verdict.csv").exists():  # `sanity train` jobs have no tables
            continue
        columns = job_columns(run_dir)
        summary = pd.read_csv(run_dir / "summary.csv").drop(columns=["model", "test"])
        summaries.append(summary.assign(**columns))
        verdicts.append(pd.read_csv(run_dir / "verdict.csv").assign(**columns))
    if not summaries:
        return pd.DataFrame(), pd.DataFrame()
    first = ["job", "model", "data", "test", "budget", "seed"]
    summary = pd.concat(summaries, ignore_index=True)
    verdict = pd.concat(verdicts, ignore_index=True)
    return (summary[first + [c for c in summary.columns if c not in first]],
            verdict[first + [c for c in verdict.columns if c not in first]])


def write_sweep_tables(sweep_dir: Path) -> pd.DataFrame:
    summary, verdict = combine(sweep_dir)
    if verdict.empty:
        return verdict
    for name, frame in (("sweep_summary.csv", summary), ("sweep_verdict.csv", verdict)):
        with atomic_path(sweep_dir / name) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.8g")
    return verdict


class SweepSummary(Callback):
    """Hydra callback (configs/sanity.yaml: hydra.callbacks) writing the combined tables after a sweep."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        verdict = write_sweep_tables(sweep_dir)
        if not verdict.empty:
            from .pages import sweep_page

            sweep_page(sweep_dir)
        failures = failed_jobs(sweep_dir)
        FAILED_JOBS.extend(job for job, _ in failures if job not in FAILED_JOBS)  # + refused ones (no error.txt)
        if failures:
            print(f"\n{len(failures)} sweep job(s) failed (the others finished):", file=sys.stderr)
            for job, message in failures:
                print(f"  {job}: {message}", file=sys.stderr)
        if verdict.empty:
            return
        print(f"\nSweep verdict ({len(verdict['job'].unique())} jobs):")
        for (model, data, test), group in verdict.groupby(["model", "data", "test"], sort=False):
            print(f"\n{model} / {data} / {test}")
            print(format_verdict(group))
        print(f"\nsweep tables: {sweep_dir / 'sweep_summary.csv'}, {sweep_dir / 'sweep_verdict.csv'}; page: "
              f"{sweep_dir / 'report.html'}")
