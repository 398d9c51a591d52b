"""`sanity reproduce` for cron: a lock, resumable suite runs, a latest pointer, a log, and a non-zero exit
when a verdict changed against the previous run of the same suite."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from filelock import FileLock

from sanity_cli import config, reproduce

from test_cli import assert_one_line_error

CHEAP = ("method=[gradient,guided_backprop]", "metric=[spearman_abs]", "n_images=3", "plots=false")


@pytest.fixture
def suite_file(tmp_path):
    path = tmp_path / "nightly.yaml"
    path.write_text("jobs:\n  mlp_cascading: [model=mnist_mlp, test=cascading]\n")  # one job: each is a process
    return path


def test_suite_run_then_a_changed_verdict_exits_1(sanity, tmp_path, suite_file):
    results = tmp_path / "out"
    first = sanity("reproduce", str(suite_file), "--results", str(results), *CHEAP)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "nothing to compare with" in first.stdout
    suite_root = results / "reproduce" / "nightly"
    latest = (suite_root / "latest").resolve()
    assert (results / "latest").resolve() == latest
    verdicts = pd.read_csv(latest / "suite_verdict.csv")
    assert sorted(set(verdicts["job"])) == ["mlp_cascading"]
    assert set(verdicts["method"]) == {"gradient", "guided_backprop"}
    log = (latest / "reproduce.log").read_text()
    assert "job mlp_cascading" in log and "results:" in log

    same = sanity("reproduce", str(suite_file), "--results", str(results), *CHEAP)
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr[-3000:]
    assert "every verdict is the same" in same.stdout

    # The threshold rule with a threshold of -1 makes every method FAIL: every other verdict changes,
    # and cron hears of it.
    changed = sanity("reproduce", str(suite_file), "--results", str(results), *CHEAP, "verdict.rule=threshold",
                     "verdict.threshold=-1")
    assert changed.returncode == 1, changed.stdout[-3000:] + changed.stderr[-3000:]
    judged_before = verdicts[verdicts["verdict"] != "FAIL"]
    assert len(judged_before) >= 1
    lines = [line for line in changed.stdout.splitlines() if line.strip().startswith("CHANGED")]
    assert len(lines) == len(judged_before)
    assert all("-> FAIL" in line for line in lines)
    assert len([p for p in suite_root.iterdir() if p.is_dir() and not p.is_symlink()]) == 3
    assert (suite_root / "latest").resolve() != latest


def test_overlapping_cron_job_skips_while_the_suite_runs(sanity_process, tmp_path, suite_file):
    results = tmp_path / "out"
    lock_dir = results / "reproduce" / "nightly"
    lock_dir.mkdir(parents=True)
    with FileLock(str(lock_dir / ".lock")):
        result = sanity_process("reproduce", str(suite_file), "--results", str(results), *CHEAP)
    assert result.returncode == 75, result.stderr
    assert "already running" in result.stderr and "Traceback" not in result.stderr
    assert not [p for p in lock_dir.iterdir() if p.is_dir()], "nothing may run while the lock is held"


def test_failed_job_is_reported_and_the_rest_still_runs(sanity, tmp_path):
    suite = tmp_path / "broken.yaml"
    missing = tmp_path / "no-such-dir"
    suite.write_text(f"jobs:\n  offline: [data=fashion_mnist, data.source=idx, 'data.path={missing}']\n"
                     "  fine: [model=mnist_mlp]\n")
    result = sanity("reproduce", str(suite), "--results", str(tmp_path / "out"), *CHEAP)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "offline: FAILED" in result.stdout and "fine: ok" in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("sanity: error:")]
    assert len(errors) == 1 and "offline" in errors[0]
    latest = (tmp_path / "out" / "reproduce" / "broken" / "latest").resolve()
    assert str(missing) in (latest / "reproduce.log").read_text()
    assert set(pd.read_csv(latest / "suite_verdict.csv")["job"]) == {"fine"}


def test_unfinished_suite_run_is_continued(tmp_path):
    root = tmp_path / "reproduce" / "s"
    (root / "2026-01-01_03-00-00").mkdir(parents=True)
    (root / "2026-01-01_03-00-00" / reproduce.SUITE_VERDICT).write_text("job,method,verdict,similarity\n")
    (root / "2026-01-02_03-00-00").mkdir()  # killed before it wrote its verdicts
    run_dir, earlier = reproduce.pick_run_dir(root)
    assert run_dir.name == "2026-01-02_03-00-00" and [r.name for r in earlier] == ["2026-01-01_03-00-00"]
    (run_dir / reproduce.SUITE_VERDICT).write_text("job,method,verdict,similarity\n")
    new, earlier = reproduce.pick_run_dir(root)
    assert not new.exists() and [r.name for r in earlier] == ["2026-01-02_03-00-00", "2026-01-01_03-00-00"]


def test_a_night_with_a_failed_job_does_not_hide_a_change(tmp_path):
    """Night 1 PASS, night 2 the job fails (no verdict), night 3 FAIL: compared with night 1."""
    root = tmp_path / "reproduce" / "s"
    header = "job,method,verdict,similarity\n"
    for night, rows in (("2026-01-01_03-00-00", "a,gradient,PASS,0.1\nb,gradient,PASS,0.2\n"),
                        ("2026-01-02_03-00-00", "b,gradient,PASS,0.2\n")):
        (root / night).mkdir(parents=True)
        (root / night / reproduce.SUITE_VERDICT).write_text(header + rows)
    _, earlier = reproduce.pick_run_dir(root)
    known = reproduce.last_known_verdicts(earlier)
    tonight = pd.DataFrame({"job": ["a", "b"], "method": ["gradient", "gradient"], "verdict": ["FAIL", "PASS"],
                            "similarity": [0.8, 0.2]})
    assert reproduce.verdict_changes(known, tonight) == [
        "a gradient: PASS -> FAIL (similarity 0.100 -> 0.800, last known in 2026-01-01_03-00-00)"]


def test_verdict_changes_name_job_method_and_similarities():
    before = pd.DataFrame({"job": ["a", "a", "b"], "method": ["gradient", "sobel", "gradient"],
                           "verdict": ["PASS", "FAIL", "PASS"], "similarity": [0.1, 1.0, 0.2]})
    after = before.assign(verdict=["FAIL", "FAIL", "PASS"], similarity=[0.7, 1.0, 0.25])
    assert reproduce.verdict_changes(before, after) == ["a gradient: PASS -> FAIL (similarity 0.100 -> 0.700)"]
    assert reproduce.verdict_changes(before, before) == []


def test_latest_that_is_a_real_directory_is_left_alone(tmp_path, capsys):
    (tmp_path / "latest").mkdir()
    (tmp_path / "latest" / "mine.txt").write_text("user data")
    (tmp_path / "r1").mkdir()
    reproduce.point(tmp_path / "latest", tmp_path / "r1")
    assert (tmp_path / "latest" / "mine.txt").read_text() == "user data"
    assert "cannot point" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "r1"]


def test_latest_pointer_is_replaced_atomically(tmp_path):
    first, second = tmp_path / "r1", tmp_path / "r2"
    first.mkdir(), second.mkdir()
    reproduce.point(tmp_path / "latest", first)
    reproduce.point(tmp_path / "latest", second)
    assert (tmp_path / "latest").resolve() == second and os.readlink(tmp_path / "latest") == "r2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "r1", "r2"]


@pytest.mark.parametrize("args, fragment", [
    (["reproduce", "no_such_suite"], "unknown suite"),
    (["reproduce"], "usage: sanity reproduce SUITE"),
    (["reproduce", "smoke", "method=[nope]"], "nope"),
])
def test_reproduce_bad_input(sanity, tmp_path, args, fragment):
    assert_one_line_error(sanity(*args, "--results", str(tmp_path / "out")), fragment)
    assert not (tmp_path / "out" / "reproduce" / "no_such_suite").exists()


def test_shipped_suites_compose():
    for name in reproduce.available_suites():
        _, jobs = reproduce.load_suite(name)
        for overrides in jobs.values():
            config.compose_jobs(overrides, False)
    assert {"smoke", "paper_mnist", "revisited"} <= set(reproduce.available_suites())


def test_a_night_whose_every_job_failed_is_exit_2_with_its_pages(sanity, tmp_path):
    suite = tmp_path / "down.yaml"
    suite.write_text(f"jobs:\n  offline: [data.source=idx, 'data.path={tmp_path / 'nowhere'}']\n")
    result = sanity("reproduce", str(suite), "--results", str(tmp_path / "out"), *CHEAP)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    root = tmp_path / "out" / "reproduce" / "down"
    assert (root / "latest" / "report.html").exists() and (root / "history.html").exists()
