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


def test_ray_launcher_runs_a_real_sweep_on_a_local_ray_instance(sanity_process, tmp_path):
    """hydra/launcher=ray (hydra-ray-launcher, Ray 2): the sweep's jobs run as Ray tasks on a local instance that
    the launcher starts (ray.init without an address), with the same sweep tables as any launcher."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher is not installed "
                        "(pip install -e '.[ray]')")
    import subprocess
    import sys

    probe = subprocess.run([sys.executable, "-c", "import ray; ray.init(num_cpus=1, include_dashboard=False); "
                            "print(ray.cluster_resources()); ray.shutdown()"],
                           capture_output=True, text=True, timeout=180)
    if probe.returncode != 0:
        pytest.skip(f"Ray cannot start a local instance on this machine: {probe.stderr.strip().splitlines()[-1:]}")
    sweep = tmp_path / "sweep"
    result = sanity_process("run", "-m", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
                            "+hydra.launcher.ray.init.include_dashboard=false", "model=mnist_cnn,mnist_mlp", *CHEAP,
                            f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "_run_job pid=" in result.stdout + result.stderr  # the jobs' output comes from Ray workers
    assert len(list(sweep.rglob("metrics.csv"))) == 2
    assert sorted(pd.read_csv(sweep / "sweep_verdict.csv")["model"]) == ["mnist_cnn", "mnist_mlp"]


def test_ray_launcher_asks_one_gpu_per_job_when_told(sanity):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher is not installed")
    result = sanity("run", "hydra/launcher=ray", "+hydra.launcher.ray.remote.num_gpus=1",
                    "hydra.launcher.ray.init.address=auto", "--cfg", "hydra")
    assert result.returncode == 0, result.stderr[-3000:]
    launcher = OmegaConf.create(result.stdout).hydra.launcher
    assert launcher._target_.endswith("RayLauncher")
    assert launcher.ray.remote.num_gpus == 1 and launcher.ray.init.address == "auto"


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
