"""Unattended runs: kill -9 in the middle and resume, resume=true finding the run, one writer per run dir."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sanity_cli.errors import SanityError
from sanity_cli.rundir import OWN_ENTRIES
from sanity_cli.units import UnitStore

from test_cli import assert_one_line_error

ARGS = ("run", "method=[gradient,smoothgrad_gradient]", "metric=[spearman_abs,ssim]", "n_images=24",
        "budget.smoothgrad_samples=32", "plots=false")


def visible_partial_files(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if ".tmp" in p.name]


def test_killed_run_resumes_to_the_same_metrics(sanity, tmp_path, model_cache):
    """SIGKILL after two randomized stages are saved; the resumed run skips them and ends byte-identical."""
    reference = sanity(*ARGS, f"hydra.run.dir={tmp_path / 'uninterrupted'}")
    assert reference.returncode == 0, reference.stderr[-3000:]

    run_dir = tmp_path / "killed"
    env = dict(os.environ, SANITY_CACHE_DIR=str(model_cache), PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "sanity_cli", *ARGS, f"hydra.run.dir={run_dir}"],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run_dir / "units" / "stage-02-repeat-0.npz").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert not (run_dir / "metrics.csv").exists() and not (run_dir / "manifest.json").exists()

    resumed = sanity(*ARGS, f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    skipped = int(log.split("resume: ")[1].split(" finished units")[0])
    assert skipped >= 4  # reference, stage 0, stages 1 and 2
    assert (run_dir / "metrics.csv").read_bytes() == (tmp_path / "uninterrupted" / "metrics.csv").read_bytes()
    assert (run_dir / "summary.csv").read_bytes() == (tmp_path / "uninterrupted" / "summary.csv").read_bytes()
    assert not (run_dir / "units").exists(), "units are removed once the run is finished"
    assert not visible_partial_files(run_dir)


def test_resume_true_finds_the_unfinished_run_of_the_same_config(sanity, tmp_path):
    small = ("run", "method=[gradient]", "metric=[spearman_abs]", "n_images=3", "plots=false")
    results = tmp_path / "results" / "2026-01-01"
    mine, other = results / "mine", results / "other"
    for run_dir, extra in ((mine, ()), (other, ("seed=1",))):
        done = sanity(*small, *extra, f"hydra.run.dir={run_dir}")
        assert done.returncode == 0, done.stderr[-3000:]
    expected = (mine / "metrics.csv").read_bytes()
    for run_dir in (mine, other):  # make both unfinished again, as a crash after their units would
        fingerprint = json.loads((run_dir / "manifest.json").read_text())["config_fingerprint"]
        for written in run_dir.iterdir():  # a crash before the tables: only what a run writes first is left
            if written.name not in OWN_ENTRIES:
                written.unlink()
        UnitStore(run_dir, fingerprint, log=lambda *_: None).open()

    resumed = sanity(*small, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resume: continuing {mine}" in resumed.stderr
    assert (mine / "metrics.csv").read_bytes() == expected
    assert not (other / "metrics.csv").exists(), "a run of another config is never resumed"

    again = sanity(*small, "resume=true", f"hydra.run.dir={mine}")
    assert again.returncode == 0 and "already complete" in again.stdout
    assert (mine / "metrics.csv").read_bytes() == expected

    nothing = sanity(*small, "seed=2", "resume=true", "plots=false")
    assert nothing.returncode == 0 and "starting a new one" in nothing.stderr


def test_finished_run_of_another_config_is_never_overwritten(sanity, tmp_path):
    run_dir = tmp_path / "fixed"
    small = ("run", "method=[gradient]", "metric=[spearman_abs]", "n_images=2", "plots=false")
    assert sanity(*small, f"hydra.run.dir={run_dir}").returncode == 0
    before = (run_dir / "metrics.csv").read_bytes()
    result = sanity(*small, "n_images=3", "resume=true", f"hydra.run.dir={run_dir}")
    assert_one_line_error(result, "different config")
    assert (run_dir / "metrics.csv").read_bytes() == before


def test_unfinished_run_dir_of_another_config_is_refused(sanity, tmp_path):
    """Another config's run with finished work is refused; one that never finished a unit (killed while it
    started: nothing to lose) is taken over (issue 30, 4: leftovers must not block the corrected command)."""
    run_dir = tmp_path / "unfinished"
    store = UnitStore(run_dir, "0123456789abcdef", log=lambda *_: None)
    store.open()
    store.release()
    started = tmp_path / "started"
    shutil.copytree(run_dir, started)
    (run_dir / "units" / "stage_000.npz").write_bytes(b"a finished unit of the other config")
    result = sanity("run", "method=[gradient]", "metric=[spearman_abs]", "n_images=2", f"hydra.run.dir={run_dir}")
    assert_one_line_error(result, "different config", "hydra.run.dir")
    assert not (run_dir / "metrics.csv").exists()
    assert not (run_dir / ".hydra").exists() and not (run_dir / "cli.log").exists(), \
        "a refused run must not leave its config in another run's directory"
    taken = sanity("run", "method=[gradient]", "metric=[spearman_abs]", "n_images=2", "plots=false",
                   f"hydra.run.dir={started}")
    assert taken.returncode == 0, taken.stderr[-3000:]
    assert (started / "manifest.json").exists()


def test_a_run_dir_in_use_is_refused_before_hydra_writes_into_it(sanity, sanity_process, tmp_path):
    run_dir = tmp_path / "busy"
    small = ("run", "method=[gradient]", "metric=[spearman_abs]", "n_images=2", "plots=false")
    probe = sanity(*small, "--cfg", "job")
    from omegaconf import OmegaConf

    from sanity_cli.rundir import config_fingerprint

    holder = UnitStore(run_dir, config_fingerprint(OmegaConf.create(probe.stdout)), log=lambda *_: None)
    holder.open()
    try:
        result = sanity_process(*small, f"hydra.run.dir={run_dir}")  # the lock's holder is another process
    finally:
        holder.release()
    assert_one_line_error(result, "another sanity process")
    assert not (run_dir / ".hydra").exists()


def test_resume_with_other_inputs_is_refused(tmp_path):
    store = UnitStore(tmp_path, "c" * 16, log=lambda *_: None)
    store.open()
    inputs = {"images_sha256": "ab", "image_ids": [1, 2], "targets": [3, 4], "models": ["m-1"]}
    store.check_inputs(inputs)
    store.check_inputs(dict(inputs))  # the same inputs: fine
    with pytest.raises(SanityError, match="images_sha256, targets differ"):
        store.check_inputs(dict(inputs, images_sha256="cd", targets=[3, 5]))
    store.release()


def test_a_run_finished_meanwhile_is_not_claimed(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(SanityError, match="already holds a finished run"):
        UnitStore(tmp_path, "d" * 16, log=lambda *_: None).open()
    UnitStore(tmp_path / "other", "d" * 16, log=lambda *_: None).open()  # the lock was released


def test_one_writer_per_run_dir(tmp_path):
    first = UnitStore(tmp_path, "f" * 16, log=lambda *_: None)
    first.open()
    with pytest.raises(SanityError, match="another sanity process"):
        UnitStore(tmp_path, "f" * 16, log=lambda *_: None).open()
    first.release()
    UnitStore(tmp_path, "f" * 16, log=lambda *_: None).open()


def test_damaged_unit_is_recomputed_and_stale_temporary_files_removed(tmp_path):
    lines = []
    store = UnitStore(tmp_path, "a" * 16, log=lines.append)
    store.open()
    store.save("stage-01-repeat-0", {"value/gradient/ssim": np.arange(3.0)})
    loaded = store.load("stage-01-repeat-0")
    np.testing.assert_array_equal(loaded["value/gradient/ssim"], np.arange(3.0))
    assert store.load("stage-02-repeat-0") is None
    store.release()

    path = tmp_path / "units" / "stage-01-repeat-0.npz"
    path.write_bytes(path.read_bytes()[:40])  # truncated by a crash of the disk, not of ours
    stale = tmp_path / ".metrics.abc.tmp.csv"
    stale.write_text("half")
    again = UnitStore(tmp_path, "a" * 16, log=lines.append)
    assert again.open() == 1
    assert not stale.exists()
    assert again.load("stage-01-repeat-0") is None
    assert any("unreadable" in line for line in lines)


@pytest.mark.slow
def test_same_config_gives_the_same_bytes_including_training(sanity, sanity_process, tmp_path):
    """Determinism on CPU: two data-randomization runs that each train both models from scratch (separate
    caches), explain with every default method and permute labels from the config's seed, write identical
    metrics.csv, and so do two independent-randomization runs with two randomization seeds per stage (on the
    cached true-label model). One run of each pair is in this process and the other in a fresh one, so no process state
    carries the result."""
    small = ("n_images=3", "budget.smoothgrad_samples=3", "budget.vargrad_samples=3", "budget.ig_steps=4",
             "plots=false", "train.max_train_images=300", "train.permuted.max_epochs=6", "train.batch_size=32")
    for name, args in (("data", ("model=mnist_mlp", "test=data")),
                       ("independent", ("model=mnist_mlp", "test=independent", "test.repeats=2"))):
        outputs = []
        for copy, runner in (("a", sanity), ("b", sanity_process)):
            # the data pair trains both models from scratch each time; the independent pair loads the true-label
            # model the first data run trained
            cache = tmp_path / (f"cache_{name}_{copy}" if name == "data" else "cache_data_a")
            result = runner("run", *args, *small, f"hydra.run.dir={tmp_path / name / copy}",
                            env={"SANITY_CACHE_DIR": str(cache)})
            assert result.returncode == 0, result.stderr[-3000:]
            outputs.append((tmp_path / name / copy / "metrics.csv").read_bytes())
        assert outputs[0] == outputs[1], f"{name}: metrics.csv differs between identical runs"


def test_two_processes_needing_the_same_model_train_it_once(tmp_path):
    """Overlapping cron jobs: both start `sanity train` on an empty cache at once; the cache lock makes one
    train and the other wait and load its result, and the cache holds one valid entry."""
    cache = tmp_path / "cache"
    env = dict(os.environ, SANITY_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1")
    args = [sys.executable, "-m", "sanity_cli", "train", "model=mnist_mlp", "train.max_train_images=500"]
    processes = [subprocess.Popen(args + [f"hydra.run.dir={tmp_path / name}"], cwd=tmp_path, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for name in ("first", "second")]
    logs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], logs
    assert sum("train: mnist_mlp on mnist" in log for log in logs) == 1, logs
    assert sum("cache: loaded" in log for log in logs) == 1, logs
    assert len(list(cache.glob("*.keras"))) == 1 and not list(cache.glob(".*tmp*"))


def test_stages_compared_in_the_background_are_saved_when_a_later_stage_fails(sanity, tmp_path, model_cache,
                                                                              monkeypatch):
    """Each stage is compared and saved on the unit store's worker thread while the next stage is explained. A
    stage that fails (here the third) still leaves every earlier stage's unit on disk, the failure is one error
    line with exit 2, and the resumed run skips the saved stages and ends byte-identical to an uninterrupted one."""
    from sanity_cli import plans

    reference = sanity(*ARGS, f"hydra.run.dir={tmp_path / 'uninterrupted'}")
    assert reference.returncode == 0, reference.stderr[-3000:]

    real = plans.explain_all

    def failing_at_stage_3(ctx, step, *args, **kwargs):
        if step.stage.index == 3:
            raise SanityError("injected failure at stage 3")
        return real(ctx, step, *args, **kwargs)

    run_dir = tmp_path / "failed"
    monkeypatch.setattr(plans, "explain_all", failing_at_stage_3)
    failed = sanity(*ARGS, f"hydra.run.dir={run_dir}")
    assert failed.returncode == 2 and "injected failure at stage 3" in failed.stderr
    assert sorted(p.name for p in (run_dir / "units").glob("*.npz")) == [
        "reference.npz", "stage-00-repeat-0.npz", "stage-01-repeat-0.npz", "stage-02-repeat-0.npz"]

    monkeypatch.setattr(plans, "explain_all", real)
    resumed = sanity(*ARGS, f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resume: 4 finished units" in resumed.stdout + resumed.stderr
    assert (run_dir / "metrics.csv").read_bytes() == (tmp_path / "uninterrupted" / "metrics.csv").read_bytes()
