"""The command line as a user meets it: help, config composition, Hydra behaviour, and bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sanity_cli import config, sanity_tests, spec
from sanity_cli.errors import SanityError

from conftest import ROOT, SHARED_MNIST, write_idx

GROUPS = config.group_choices()


def composed(*overrides: str):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config.config_dir()), version_base="1.3"):
            cfg = compose(config_name="sanity", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()
    OmegaConf.resolve(cfg)
    return cfg


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("sanity: error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_groups_are_the_documented_interface():
    assert set(GROUPS) >= {"model", "data", "test", "method", "metric", "budget", "experiment"}
    assert {"mnist_cnn", "mnist_mlp"} <= set(GROUPS["model"])
    assert set(GROUPS["data"]) >= {"mnist", "fashion_mnist"}
    from sanity_cli import sanity_tests

    assert set(GROUPS["test"]) == set(sanity_tests.TESTS) == {  # configs mirror the registry
        "cascading", "independent", "data", "smooth_mprt", "efficient_mprt", "input_invariance", "random_logit"}
    assert set(GROUPS["budget"]) >= {"smoke", "paper"}
    from sanity_cli import metrics

    assert set(GROUPS["metric"]) == set(metrics.METRICS) == {"spearman_abs", "spearman", "ssim", "hog_pearson",
                                                             "hog_spearman", "entropy_rise"}


@pytest.mark.parametrize("group", ["model", "data", "test", "budget", "experiment"])
def test_every_single_choice_composes_and_validates(group):
    for choice in GROUPS[group]:
        override = f"{group}={choice}"
        photos = (group, choice) == ("data", "images")  # photos go with Inception
        own = (group, choice) in (("model", "keras"), ("data", "npz"), ("data", "folder"))  # your model and data
        cfg = composed(override, *(["model=inception"] if photos else []),
                       *(["model=keras", f"model.path={__file__}",
                          f"data.path={Path(__file__).parent if choice == 'folder' else __file__}"]
                         if own else []), *(["data=npz"] if choice == "keras" else []),
                       *(["data.name=mnist"] if choice == "tfds" else []))
        spec.parse(cfg)
        if group in ("model", "data", "test", "budget"):
            assert cfg[group].name == choice or (choice, cfg[group].name) == ("tfds", "mnist")


def test_every_method_and_metric_composes_alone():
    for method in GROUPS["method"]:
        cfg = composed(f"method=[{method}]", *(["method.custom.function=mypkg.mymodule:my_method"]
                                              if method == "custom" else []))
        runs = spec.parse(cfg).methods
        assert len(runs) == 1 and runs[0].kind in method
    for metric in GROUPS["metric"]:
        cfg = composed(f"metric=[{metric}]")
        assert list(spec.metric_params(cfg.metric, sanity_tests.get(cfg.test.name))) == [metric]


def test_default_methods_are_the_papers_plus_controls():
    names = [run.name for run in spec.parse(composed()).methods]
    assert names == ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad_gradient",
                     "smoothgrad_integrated_gradients", "vargrad", "guided_backprop", "gradcam", "guided_gradcam",
                     "sobel", "random"]


def test_budgets_carry_the_papers_hyperparameters():
    paper = composed("budget=paper")
    assert paper.method.smoothgrad_gradient.samples == 50
    assert paper.method.smoothgrad_gradient.sigma == 0.15
    assert paper.method.integrated_gradients.steps == 50
    assert paper.method.vargrad.samples == 25
    smoke = composed("budget=smoke", "method.smoothgrad_gradient.samples=3")
    assert smoke.method.smoothgrad_gradient.samples == 3


def test_generic_smoothgrad_is_named_after_its_base():
    runs = spec.parse(composed("method=[smoothgrad]", "method.smoothgrad.base=guided_backprop")).methods
    assert [r.name for r in runs] == ["smoothgrad_guided_backprop"]


@pytest.mark.parametrize("overrides, fragment", [
    (["verdict.threshold=1.5"], "verdict.threshold"),
    (["method=[smoothgrad]", "method.smoothgrad.base=sobel"], "not a gradient-based method"),
    (["method=[smoothgrad_gradient]", "method.smoothgrad_gradient.samples=-3"], "samples"),
    (["method=[integrated_gradients]", "method.integrated_gradients.steps=0"], "steps"),
    (["method=[vargrad]", "method.vargrad.sigma=0"], "sigma"),
    (["train.epochs=-1"], "epochs"),
    (["n_images=0"], "n_images"),
    (["target=foo"], "target"),
    (["verdict.metric=ssim", "metric=[spearman_abs]"], "verdict.metric"),
    (["data=images"], "data=mnist or data=fashion_mnist"),
    (["model=inception", "data.size=224"], "data.size"),
    (["model=inception", "data.max_images=0"], "data.max_images"),
    (["test.init=foo"], "test.init"),
    (["test.init_std=-1"], "test.init_std"),
    (["data.source=foo"], "data.source"),
    (["method.gradient.output=foo"], "output"),
    (["method.integrated_gradients.rule=foo"], "rule"),
    (["method=[smoothgrad,smoothgrad_gradient]"], "twice"),
    (["method=[smoothgrad_integrated_gradients]", "+method.smoothgrad_integrated_gradients.base_params.stepz=3"],
     "stepz"),
])
def test_bad_values_are_rejected_before_any_work(overrides, fragment):
    with pytest.raises(SanityError, match=re.escape(fragment)):
        spec.parse(composed(*overrides))


def test_help_lists_commands_and_group_choices(sanity):
    result = sanity("--help")
    assert result.returncode == 0
    for word in ("run", "train", "model", "mnist_cnn", "mnist_mlp", "cascading", "independent", "smoke", "paper",
                 "guided_backprop", "spearman_abs"):
        assert word in result.stdout


def test_cfg_job_prints_the_composed_config(sanity, tmp_path):
    result = sanity("run", "model=mnist_mlp", "test=independent", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert cfg.model.name == "mnist_mlp" and cfg.test.name == "independent"
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("args, fragments", [
    (["run", "model=foo"], ["model", "foo"]),
    (["run", "train.epochs=-1"], ["epochs"]),
    (["run", "method=[nope]"], ["nope"]),
    (["run", "verdict.threshold=2"], ["threshold"]),
    (["frobnicate"], ["unknown command"]),
    (["run", "-m", "model=mnist_cnn,foo"], ["foo"]),
])
def test_bad_input_is_one_error_line_exit_2(sanity, tmp_path, args, fragments):
    result = sanity(*args)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "results").exists(), "bad input must not create a run directory"


def test_data_path_without_idx_files(sanity, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = sanity("train", "data.source=idx", f"data.path={empty}")
    assert_one_line_error(result, "train-images")


def test_wrong_shaped_idx_file(sanity, tmp_path):
    import numpy as np

    bad = tmp_path / "bad"
    bad.mkdir()
    write_idx(bad / "train-images-idx3-ubyte.gz", np.zeros((5, 20, 20)))
    write_idx(bad / "train-labels-idx1-ubyte.gz", np.zeros(5))
    write_idx(bad / "t10k-images-idx3-ubyte.gz", np.zeros((5, 20, 20)))
    write_idx(bad / "t10k-labels-idx1-ubyte.gz", np.zeros(5))
    result = sanity("train", "data.source=idx", f"data.path={bad}")
    assert_one_line_error(result, "20")


def test_gradcam_layer_that_is_not_conv_lists_valid_layers(sanity):
    result = sanity("run", "method=[gradcam]", "method.gradcam.layer=fc1", "metric=[spearman_abs]",
                    "verdict.metric=spearman_abs", "n_images=2")
    assert_one_line_error(result, "fc1", "conv1", "conv2")


def test_train_from_idx_then_load_from_cache(sanity, tmp_path):
    args = ("train", "model=mnist_cnn", "data=mnist", "data.source=idx", f"data.path={SHARED_MNIST}",
            "budget=smoke")
    first = sanity(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "train: mnist_cnn on mnist with true labels" in first.stdout + first.stderr
    assert [p.parent.name.endswith("_mnist_cnn_mnist_train") for p in (tmp_path / "results").rglob("manifest.json")] \
        == [True]
    match = re.search(r"test accuracy (\d\.\d+)", first.stdout)
    assert match and float(match.group(1)) > 0.8, first.stdout
    second = sanity(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "cache: loaded" in log and "train: mnist_cnn" not in log


def test_multirun_sweep_writes_one_directory_per_job(sanity, tmp_path):
    result = sanity("run", "-m", "model=mnist_cnn,mnist_mlp", "method=[gradient]", "metric=[spearman_abs]",
                    "n_images=2", "plots=false", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 0, result.stderr[-3000:]
    manifests = sorted((tmp_path / "sweep").rglob("metrics.csv"))
    assert len(manifests) == 2
    assert {p.parent.name.split("_", 1)[1].split("_mnist_")[0] for p in manifests} == {"mnist_cnn", "mnist_mlp"}
    import pandas as pd

    verdict = pd.read_csv(tmp_path / "sweep" / "sweep_verdict.csv")
    assert sorted(verdict["model"]) == ["mnist_cnn", "mnist_mlp"]
    assert set(verdict["method"]) == {"gradient"} and set(verdict["test"]) == {"cascading"}
    summary = pd.read_csv(tmp_path / "sweep" / "sweep_summary.csv")
    assert len(summary) == 2 * 5  # two jobs x five stages, one method and metric
    assert "Sweep verdict (2 jobs)" in result.stdout


def test_readme_opens_with_two_commands_and_ci_runs_its_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert len(block) == 2
    install_and_run, tests = (line.split("#")[0].strip() for line in block)
    assert install_and_run.endswith("sanity run")
    test_command = tests.split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines(), (test_command, ci)


def test_run_dir_is_never_reused(sanity, tmp_path):
    target = tmp_path / "fixed"
    args = ("run", "method=[gradient]", "metric=[spearman_abs]", "n_images=2", "plots=false",
            f"hydra.run.dir={target}")
    first = sanity(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    before = (target / "metrics.csv").read_bytes()
    second = sanity(*args)
    assert_one_line_error(second, "already holds a finished run")
    assert (target / "metrics.csv").read_bytes() == before


def test_unwritable_output_directory(sanity, tmp_path):
    import os

    if os.geteuid() == 0:
        target = Path("/proc/sanity-cannot-write-here")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "run"
    result = sanity("run", "method=[gradient]", "metric=[spearman_abs]", "n_images=2", f"hydra.run.dir={target}")
    assert_one_line_error(result, "cannot write", str(target), "hydra.run.dir")


def test_ctrl_c_during_a_stage_exits_130_and_keeps_nothing_half_written(tmp_path, model_cache):
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, SANITY_CACHE_DIR=str(model_cache), PYTHONUNBUFFERED="1")
    run_dir = tmp_path / "interrupted"
    process = subprocess.Popen([sys.executable, "-m", "sanity_cli", "run", "n_images=200",
                                "method=[smoothgrad_integrated_gradients]", "budget.smoothgrad_samples=50",
                                "budget.ig_steps=50", f"hydra.run.dir={run_dir}"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               # a test runner started in the background ignores SIGINT; a terminal does not
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        log = run_dir / "cli.log"
        if log.exists() and "run: cascading test" in log.read_text():
            break
        time.sleep(0.5)
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, (out[-2000:], err[-2000:])
    assert "Traceback" not in err and "interrupted" in err
    assert not (run_dir / "metrics.csv").exists() and not (run_dir / "manifest.json").exists()
    assert not list(run_dir.glob(".*.tmp*")), "no temporary file may be left behind"


@pytest.mark.parametrize("override, fragment", [
    ("n_images=abc", "n_images: Value 'abc'"), ("plots=maybe", "plots: Value 'maybe' is not a valid bool"),
    ("train.learning_rate=fast", "train.learning_rate:"), ("seed=true", "seed:"), ("batch_size=2.5", "batch_size:"),
    ("verdict.threshold=x", "verdict.threshold:"), ("train.permuted.max_epochs=many", "train.permuted.max_epochs:"),
])
def test_the_typed_schema_rejects_wrong_types_while_composing(override, fragment):
    """sanity_cli/schema.py: composing alone (no config.validate) rejects a value of the wrong type, naming it."""
    with pytest.raises(SanityError) as raised:
        config.compose_jobs([override], False, check=False)
    assert str(raised.value).startswith(fragment)
