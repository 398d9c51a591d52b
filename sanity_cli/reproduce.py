"""`sanity reproduce SUITE`: re-run a named suite of experiments unattended (cron) and say when a verdict changed.

A suite (configs/suites/NAME.yaml, or any YAML file) names jobs, each a list of `sanity run` overrides.
One reproduce run:
  1. takes the suite's lock (a second, overlapping cron job exits at once with code 75);
  2. continues the suite's unfinished run if the last one was killed, else starts results/reproduce/SUITE/<time>/;
  3. runs every job as its own `sanity run ... resume=true` process into <run>/<job>/, all output to
     <run>/reproduce.log;
  4. writes <run>/suite_verdict.csv (every job's verdict), then points results/reproduce/SUITE/latest and
     results/latest at the run;
  5. compares each method's verdict with its last known verdict (the newest earlier run that has one, so a
     night whose job failed does not hide a change) and prints every change.
Exit code: 0 all jobs finished and no verdict changed; 1 a verdict changed; 2 a job failed or bad input;
75 the suite is already running; 130 interrupted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from .config import ConfigSource, compose_jobs, yaml_error
from .errors import SanityError
from .io import atomic_path
from .rundir import hydra_quoted

SUITE_VERDICT = "suite_verdict.csv"   # written last: a suite run without it is unfinished
LOG_FILE = "reproduce.log"
EXIT_CHANGED, EXIT_FAILED, EXIT_BUSY = 1, 2, 75


def available_suites(source: ConfigSource = ConfigSource()) -> list[str]:
    return sorted({p.stem for folder in source.folders() for p in (folder / "suites").glob("*.yaml")})


def load_suite(name: str, source: ConfigSource = ConfigSource()) -> tuple[str, dict[str, list[str]]]:
    """(suite name, {job name: overrides}) from suites/NAME.yaml in the config folders (--config-dir and
    --config-path first, then sanity's own), or a YAML file path."""
    path = Path(name).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        found = [folder / "suites" / f"{name}.yaml" for folder in source.folders()]
        path = next((p for p in found if p.is_file()), found[-1])
    if not path.is_file():
        raise SanityError(f"unknown suite '{name}'; choose from {', '.join(available_suites(source))} or give a "
                          f"YAML file")
    try:
        with open(path) as handle:  # (a file, so that a YAML error names it)
            spec = yaml.safe_load(handle) or {}
        jobs = {str(job): [str(o) for o in overrides] for job, overrides in spec["jobs"].items()}
    except yaml.YAMLError as err:
        raise SanityError(yaml_error(err)) from None
    except (KeyError, AttributeError, TypeError) as err:
        raise SanityError(f"suite file {path} is not valid ({type(err).__name__}); it needs 'jobs: {{NAME: "
                          f"[override, ...]}}'") from None
    if not jobs:
        raise SanityError(f"suite file {path} has no jobs")
    return path.stem, jobs


def suite_runs(suite_root: Path) -> list[Path]:
    return sorted(p for p in suite_root.iterdir() if p.is_dir() and not p.is_symlink()) \
        if suite_root.is_dir() else []


def pick_run_dir(suite_root: Path) -> tuple[Path, list[Path]]:
    """(this run's directory, the earlier finished runs, newest first): an unfinished last run is continued."""
    runs = suite_runs(suite_root)
    finished = [r for r in runs if (r / SUITE_VERDICT).exists()]
    unfinished = [r for r in runs if not (r / SUITE_VERDICT).exists()]
    if unfinished and (not finished or unfinished[-1].name > finished[-1].name):
        return unfinished[-1], finished[::-1]
    return suite_root / time.strftime("%Y-%m-%d_%H-%M-%S"), finished[::-1]


def last_known_verdicts(previous: list[Path]) -> pd.DataFrame:
    """Each (job, method)'s verdict in the newest earlier run that has one (a job that failed one night is
    compared with the night before), with the run it came from."""
    frames = [pd.read_csv(run / SUITE_VERDICT).assign(run=run.name) for run in previous]
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return pd.DataFrame(columns=["job", "method", "verdict", "similarity", "run"])
    return pd.concat(frames, ignore_index=True).drop_duplicates(["job", "method"], keep="first")


def point(link: Path, target: Path) -> None:
    """Make `link` a symlink to `target`, atomically (a reader sees the old or the new pointer)."""
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(target, link.parent))
        os.replace(tmp, link)
    except OSError as err:  # e.g. `latest` is a real directory of the user's: leave it alone
        tmp.unlink(missing_ok=True)
        print(f"reproduce: warning: cannot point {link} at {target} ({err.strerror})", file=sys.stderr)


def run_job(job: str, overrides: list[str], run_dir: Path, log, source: ConfigSource) -> int:
    command = [sys.executable, "-m", "sanity_cli", "run", *source.flags(), *overrides, "resume=true",
               f"hydra.run.dir={hydra_quoted(run_dir.absolute() / job)}"]
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} job {job}: sanity run {' '.join(overrides)}\n")
    log.flush()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
        raise


def write_pages(run_dir: Path, suite_root: Path) -> None:
    """The night's page and the suite's history; a page that cannot be built is a warning, never a changed exit
    status (cron reads that as a verdict change or a failed job)."""
    from .pages import history_page, suite_page

    try:
        suite_page(run_dir)
        history_page(suite_root)
    except Exception as err:  # noqa: BLE001 (pages are a view of the tables, which are written)
        print(f"reproduce: warning: report pages not written ({type(err).__name__}: {err})", file=sys.stderr)


def collect_verdicts(run_dir: Path, jobs: dict[str, list[str]]) -> pd.DataFrame:
    frames = [pd.read_csv(run_dir / job / "verdict.csv").assign(job=job) for job in jobs
              if (run_dir / job / "verdict.csv").exists()]
    if not frames:
        return pd.DataFrame(columns=["job", "method", "verdict", "similarity"])
    table = pd.concat(frames, ignore_index=True)
    return table[["job"] + [c for c in table.columns if c != "job"]]


def verdict_changes(previous: pd.DataFrame, current: pd.DataFrame) -> list[str]:
    """One line per (job, method) whose verdict differs from its last known verdict."""
    before = previous.set_index(["job", "method"])
    changes = []
    for row in current.itertuples():
        key = (row.job, row.method)
        if key in before.index:
            old = before.loc[key]
            if old["verdict"] != row.verdict:
                since = f", last known in {old['run']}" if "run" in old else ""
                changes.append(f"{row.job} {row.method}: {old['verdict']} -> {row.verdict} "
                               f"(similarity {old['similarity']:.3f} -> {row.similarity:.3f}{since})")
    return changes


def reproduce(suite: str, extra: list[str], results: Path, source: ConfigSource = ConfigSource()) -> int:
    """Run the suite once (see the module docstring); returns the exit code."""
    from filelock import FileLock, Timeout

    name, jobs = load_suite(suite, source)
    for job, overrides in jobs.items():  # every job's config must be valid before anything runs
        try:
            compose_jobs(overrides + extra, False, source)
        except SanityError as err:
            raise SanityError(f"suite {name}, job {job}: {err}") from None
    suite_root = results / "reproduce" / name
    try:
        suite_root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SanityError(f"cannot write to {suite_root} ({err.strerror}); pass --results DIR") from None
    lock = FileLock(str(suite_root / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"sanity: reproduce: suite '{name}' is already running (lock {suite_root / '.lock'}); "
              f"skipping this run", file=sys.stderr)
        return EXIT_BUSY
    try:
        run_dir, earlier = pick_run_dir(suite_root)
        resumed = run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        print(f"reproduce: suite '{name}', {len(jobs)} jobs, {'continuing' if resumed else 'new run'} {run_dir}")
        failed = []
        with open(run_dir / LOG_FILE, "a") as log:
            for job, overrides in jobs.items():
                started = time.time()
                code = run_job(job, overrides + extra, run_dir, log, source)
                status = "ok" if code == 0 else f"FAILED (exit {code})"
                print(f"  {job}: {status} in {time.time() - started:.0f} s")
                if code == 130:
                    raise KeyboardInterrupt
                if code != 0:
                    failed.append(job)
        current = collect_verdicts(run_dir, jobs)
        with atomic_path(run_dir / SUITE_VERDICT) as tmp:
            current.to_csv(tmp, index=False, float_format="%.8g")
        point(suite_root / "latest", run_dir)
        point(results / "latest", run_dir)
        known = last_known_verdicts(earlier)
        changes = verdict_changes(known, current)
        write_pages(run_dir, suite_root)
    finally:
        lock.release()
    compared = current.merge(known[["job", "method"]], on=["job", "method"]) if len(current) else current
    if changes:
        print(f"reproduce: {len(changes)} verdict(s) changed since their last known value:")
        for line in changes:
            print(f"  CHANGED {line}")
    elif len(compared):
        print(f"reproduce: every verdict is the same as last known ({len(compared)} compared)")
    else:
        print("reproduce: no earlier verdict of these jobs; nothing to compare with")
    for job in failed:
        print(f"  {job}: not compared (failed in this run)")
    print(f"reproduce: log {run_dir / LOG_FILE}; verdicts {run_dir / SUITE_VERDICT}")
    if failed:
        print(f"sanity: error: {len(failed)} job(s) failed: {', '.join(failed)}; see {run_dir / LOG_FILE}",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_CHANGED if changes else 0
