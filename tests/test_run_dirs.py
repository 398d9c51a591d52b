"""Run directories whatever their spelling, user config folders, and no half-made run folders (issue 16).

Each refused case checks that the finished run it points at is byte-identical afterwards and that nothing new
appeared in the working directory (no stray folder named with a quote)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sanity_cli.rundir import RunDir, hydra_quoted, new_directories

from test_cli import assert_one_line_error

CHEAP = ("method=[gradient]", "metric=[spearman_abs]", "n_images=2", "plots=false")


def checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under root (hidden ones included), by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def finished_run(path: Path) -> Path:
    """A finished run directory of some other config: its manifest (written last) and Hydra's records."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text("seed: 7\n")
    (path / ".hydra" / "overrides.yaml").write_text("- seed=7\n")
    (path / "metrics.csv").write_text("model,value\nmnist_cnn,0.5\n")
    (path / "manifest.json").write_text(json.dumps({"config_fingerprint": "0123456789abcdef"}))
    return path


@pytest.mark.parametrize("spelling", [
    'hydra.run.dir="DIR WITH SPACES/run"',           # quoted (the case)
    "hydra.run.dir='DIR WITH SPACES/run'",           # single-quoted
    "hydra.run.dir=DIR WITH SPACES/run",             # unquoted spaces (one shell word)
    "hydra.run.dir=sub/../DIR WITH SPACES/run",      # relative with ..
    "hydra.run.dir='~/DIR WITH SPACES/run'",         # home
    "hydra.run.dir='${oc.env:RUN_PARENT}/run'",      # interpolation
    "hydra.run.dir='DIR WITH SPACES/${now:%Y}'",     # ${now:...}, resolved once
])
def test_every_spelling_of_a_finished_run_dir_is_refused_before_anything_is_written(sanity, tmp_path,
                                                                                     spelling):
    import time

    target = tmp_path / "DIR WITH SPACES" / ("run" if "now:" not in spelling else time.strftime("%Y"))
    finished_run(target)
    (tmp_path / "sub").mkdir()
    before, listing = checksums(tmp_path), sorted(p.name for p in tmp_path.iterdir())
    result = sanity("run", *CHEAP, "test=independent", spelling,
                         env={"HOME": str(tmp_path), "RUN_PARENT": str(tmp_path / "DIR WITH SPACES")})
    assert_one_line_error(result, "already holds a finished run", str(target))
    assert checksums(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_a_run_dir_set_in_a_user_config_file_is_checked_too(sanity, tmp_path):
    target = finished_run(tmp_path / "kept run")
    user = tmp_path / "my_configs"
    user.mkdir()
    (user / "audit.yaml").write_text(f"defaults:\n  - sanity\n  - _self_\nn_images: 2\n"
                                     f"hydra:\n  run:\n    dir: {json.dumps(str(target))}\n")
    before = checksums(tmp_path)
    result = sanity("run", *CHEAP, "--config-path", str(user), "--config-name", "audit")
    assert_one_line_error(result, "already holds a finished run", str(target))
    assert checksums(tmp_path) == before


def test_hydra_quoted_round_trips_every_character():
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    for path in ["/a b/c", "/x/it's", "/x/\\back", "/x/a\\", "/d/${now:%H}", '/q/"dq"', "/e/=,[]{}", "/u/ü"]:
        value = parser.parse_override(f"hydra.run.dir={hydra_quoted(path)}").value()
        assert OmegaConf.create({"d": value}).d == path


def test_a_user_experiment_in_config_dir_runs_and_a_broken_one_is_one_line(sanity, tmp_path):
    user = tmp_path / "my configs"
    (user / "experiment").mkdir(parents=True)
    (user / "experiment" / "my_exp.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: mnist_mlp\nn_images: 3\n")
    (user / "experiment" / "broken.yaml").write_text("n_images: [1, 2\nseed: 3\n")

    shown = sanity("run", "--config-dir", str(user), "experiment=my_exp", "--cfg", "job")
    assert shown.returncode == 0 and "name: mnist_mlp" in shown.stdout and "n_images: 3" in shown.stdout
    done = sanity("run", "--config-dir", str(user), "experiment=my_exp", "method=[gradient]",
                       "metric=[spearman_abs]", "plots=false", "hydra.run.dir=mine")
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((tmp_path / "mine" / "manifest.json").read_text())
    assert manifest["config"]["model"]["name"] == "mnist_mlp" and manifest["config"]["n_images"] == 3

    for extra in ([], ["--cfg", "job"]):  # with --cfg Hydra printed an 89-line traceback
        broken = sanity("run", f"--config-dir={user}", "experiment=broken", *extra)
        assert_one_line_error(broken, f"{user / 'experiment' / 'broken.yaml'}:2", "YAML syntax error",
                              "started on line 1")
    searchpath = sanity("run", f"hydra.searchpath=[file://{user}]", "experiment=my_exp", "--cfg", "job")
    assert searchpath.returncode == 0 and "name: mnist_mlp" in searchpath.stdout
    missing = sanity("run", "--config-dir", str(tmp_path / "nowhere"))
    assert_one_line_error(missing, "--config-dir", "no such folder")


def test_a_user_primary_config_builds_on_sanitys_configs(sanity, tmp_path):
    user = tmp_path / "conf"
    user.mkdir()
    (user / "audit.yaml").write_text("defaults:\n  - sanity\n  - override model: mnist_mlp\n  - _self_\n"
                                     "n_images: 2\nseed: 5\nnotes: an audit of my own  # a key of the user's\n")
    result = sanity("run", "--config-path", "conf", "--config-name", "audit", "method=[gradient]",
                         "metric=[spearman_abs]", "plots=false", "hydra.run.dir=audit_run")
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((tmp_path / "audit_run" / "manifest.json").read_text())["config"]
    assert (config["model"]["name"], config["n_images"], config["seed"]) == ("mnist_mlp", 2, 5)


def test_reproduce_finds_a_suite_and_experiments_in_config_dir(sanity, tmp_path):
    user = tmp_path / "cfg"
    (user / "suites").mkdir(parents=True)
    (user / "experiment").mkdir()
    (user / "experiment" / "tiny.yaml").write_text(
        "# @package _global_\nn_images: 2\nplots: false\nmethod:\n  gradient: {kind: gradient}\n"
        "metric:\n  spearman_abs: {}\n")
    (user / "suites" / "mine.yaml").write_text("jobs:\n  tiny: [experiment=tiny]\n")
    result = sanity("reproduce", "mine", "--config-dir", str(user), "--results", "out dir")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    verdicts = list((tmp_path / "out dir" / "reproduce" / "mine" / "latest").glob("tiny/verdict.csv"))
    assert len(verdicts) == 1 and "gradient" in verdicts[0].read_text()


def test_a_late_error_leaves_no_half_made_run_folder(sanity, tmp_path):
    result = sanity("run", *CHEAP, "data.source=idx", f"data.path={tmp_path / 'no idx here'}")
    assert_one_line_error(result, "no idx here")
    assert not (tmp_path / "results").exists(), "the run folder (and its new parents) must be removed"


def test_abandon_keeps_finished_work_and_marks_it_failed(tmp_path):
    new = RunDir(tmp_path / "a" / "b" / "run")
    created = new_directories(new.path)
    assert created == [new.path, new.path.parent, new.path.parent.parent]
    (new.path / ".hydra").mkdir(parents=True)
    new.abandon("boom", created)
    assert not (tmp_path / "a").exists()

    worked = RunDir(tmp_path / "worked")
    created = new_directories(worked.path)
    worked.units.mkdir(parents=True)
    (worked.units / "reference.npz").write_bytes(b"x")
    worked.abandon("disk full", created)
    assert (worked.path / "error.txt").read_text() == "disk full\n" and (worked.units / "reference.npz").exists()

    other = RunDir(finished_run(tmp_path / "theirs"))
    before = checksums(other.path)
    other.abandon("refused", [other.path])
    assert checksums(other.path) == before, "another run's directory is never touched"


def test_the_directory_is_locked_before_hydra_writes_into_it(sanity, tmp_path, monkeypatch):
    """Another process claims the directory between the check and the run (simulated: the check does not see
    the lock): the run is refused when it claims, before Hydra's .hydra/ and cli.log are written."""
    from sanity_cli.units import UnitStore

    run_dir = tmp_path / "contested"
    holder = UnitStore(run_dir, "f" * 16, log=lambda *_: None)
    holder.open()
    before = checksums(run_dir)
    monkeypatch.setattr(RunDir, "busy", lambda self: False)
    try:
        result = sanity("run", *CHEAP, f"hydra.run.dir={run_dir}")
    finally:
        holder.release()
    assert_one_line_error(result, str(run_dir))
    assert checksums(run_dir) == before and not (run_dir / ".hydra").exists()


def test_abandon_leaves_a_directory_another_process_holds(tmp_path):
    from sanity_cli.units import UnitStore

    holder = UnitStore(tmp_path / "held", "e" * 16, log=lambda *_: None)
    holder.open()
    try:
        before = checksums(tmp_path / "held")
        assert "another process" in RunDir(tmp_path / "held").abandon("boom", [tmp_path / "held"])
        assert checksums(tmp_path / "held") == before
    finally:
        holder.release()


def test_a_sweep_into_a_directory_with_finished_jobs_needs_resume(sanity, tmp_path):
    sweep = tmp_path / "sweep"
    finished_run(sweep / "0_mnist_cnn_mnist_cascading")
    before = checksums(sweep)
    result = sanity("run", "-m", *CHEAP, "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert_one_line_error(result, "already holds finished jobs", "resume=true")
    assert checksums(sweep) == before


def test_train_directories_follow_a_user_configs_pattern(sanity, tmp_path):
    user = tmp_path / "conf"
    user.mkdir()
    (user / "mine.yaml").write_text("defaults:\n  - sanity\n  - _self_\nhydra:\n  run:\n"
                                    "    dir: mine/${hydra.runtime.choices.model}_${hydra.runtime.choices.test}\n")
    result = sanity("train", "--config-path", str(user), "--config-name", "mine", "train.max_train_images=200",
                    "train.epochs=1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["mnist_cnn_train"]
    assert not (tmp_path / "mine" / "mnist_cnn_train" / "units").exists()


def test_a_sweep_uses_experiments_from_config_dir(sanity, tmp_path):
    user = tmp_path / "cfg"
    (user / "experiment").mkdir(parents=True)
    (user / "experiment" / "mlp.yaml").write_text("# @package _global_\ndefaults:\n  - override /model: mnist_mlp\n")
    sweep = tmp_path / "sweep dir"
    result = sanity("run", "-m", "--config-dir", str(user), "experiment=mlp", *CHEAP, "seed=0,1",
                    f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-2000:]
    models = {json.loads(p.read_text())["config"]["model"]["name"] for p in sweep.rglob("manifest.json")}
    assert models == {"mnist_mlp"} and len(list(sweep.rglob("manifest.json"))) == 2
