"""Sweeps: the shipped launcher configs, and a failing job that does not stop the others."""

from __future__ import annotations

import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import SHARED_MNIST

CHEAP = ("method=[gradient]", "metric=[spearman_abs]", "n_images=2", "plots=false")


def test_parallel_launcher_runs_the_sweep_in_worker_processes(sanity_process, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    result = sanity_process("run", "-m", "hydra/launcher=parallel", "model=mnist_cnn,mnist_mlp", *CHEAP,
                    f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    assert len(list(sweep.rglob("metrics.csv"))) == 2
    assert sorted(pd.read_csv(sweep / "sweep_verdict.csv")["model"]) == ["mnist_cnn", "mnist_mlp"]


def test_slurm_launcher_config_composes(sanity, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = sanity("run", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra")
    assert result.returncode == 0, result.stderr[-3000:]
    launcher = OmegaConf.create(result.stdout).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1 and launcher.timeout_min == 240


def test_a_failing_job_does_not_stop_the_sweep(sanity, tmp_path):
    missing, sweep = tmp_path / "missing", tmp_path / "sweep"
    result = sanity("run", "-m", "data.source=idx", f"data.path={missing},{SHARED_MNIST}", *CHEAP,
                    f"hydra.sweep.dir={sweep}")
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (error_file,) = sweep.rglob("error.txt")
    assert str(missing) in error_file.read_text() and error_file.parent.name.startswith("0_")
    verdict = pd.read_csv(sweep / "sweep_verdict.csv")
    assert verdict["job"].str.startswith("1_").all() and len(verdict) == 1
    assert "1 sweep job(s) failed" in result.stderr
