"""A fuzzed config space (issue 30): overrides drawn from the schema and the registries' declared parameters, with
valid, boundary and invalid values (0, negatives, huge numbers, NaN, wrong types, empty and repeated lists, unknown
names, paths that are files, folders, missing, with spaces and non-ASCII letters).

1. Composing and parsing any drawn command gives a RunSpec or one SanityError line, never another exception.
2. Running a drawn command in-process ends with exit code 0 or 2, never a traceback; on 2 there is one
   `sanity: error:` line and no new folder; a finished run elsewhere stays byte-identical.

CI runs a bounded number of examples (derandomized: the same ones every time); SANITY_FUZZ_EXAMPLES=N runs more.
Every failing example found so far is an explicit case of the bad-input matrix (tests/test_bad_input.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sanity_cli import architectures, datasources, methods, metrics, sanity_tests  # noqa: E402
from sanity_cli.config import compose_jobs  # noqa: E402
from sanity_cli.errors import SanityError  # noqa: E402
from sanity_cli.spec import TOP  # noqa: E402

EXAMPLES = int(os.environ.get("SANITY_FUZZ_EXAMPLES", "0"))
PATHS = ("/nonexistent/place", "a folder with spaces", "fichier_é.npz", "README.md", ".", "~/nowhere", "a=b")
NUMBERS = ("0", "1", "-1", "2", "0.5", "-0.5", "1e9", "-1e-9", "nan", "inf", "3.7")
OTHERS = ("abc", "''", "[]", "[1,2]", "null", "true", "false", "é", "'a b'", "{a: 1}")
VALUES = NUMBERS + OTHERS + PATHS


def declared_keys() -> list[str]:
    """Every key a user may set: the top-level ones, the tests', the default methods' and metrics', the data's,
    the models'."""
    keys = [k for k in TOP] + ["verdict.rule", "verdict.threshold", "verdict.metric", "train.epochs", "train.l2",
                               "train.batch_size", "train.learning_rate", "train.validation_images",
                               "train.validation_from", "train.permuted.target_accuracy", "train.permuted.max_epochs"]
    keys += [f"test.{p}" for t in sanity_tests.TESTS.values() for p in t.params]
    keys += [f"method.{m}.{p}" for m in ("gradient", "integrated_gradients", "smoothgrad_gradient", "gradcam")
             for p in methods.get({"smoothgrad_gradient": "smoothgrad"}.get(m, m)).params()]
    keys += [f"metric.{m}.{p}" for m in metrics.METRICS for p in metrics.METRICS[m].params]
    keys += [f"data.{p}" for p in datasources.get("mnist").params]
    keys += [f"model.{p}" for p in architectures.get("mnist_cnn").params]
    return sorted(set(keys))


KEYS = declared_keys()
GROUPS = {"test": list(sanity_tests.TESTS) + ["sideways"], "model": ["mnist_cnn", "mnist_mlp", "keras", "nope"],
          "data": ["mnist", "npz", "folder", "images", "nope"]}
NAMES = {"method": ["gradient", "sobel", "random", "guided_backprop", "nonesuch"],
         "metric": ["spearman_abs", "ssim", "entropy_rise", "nonesuch"]}


@st.composite
def override(draw) -> str:
    kind = draw(st.sampled_from(("key", "key", "key", "group", "list", "unknown")))
    if kind == "key":
        return f"{draw(st.sampled_from(KEYS))}={draw(st.sampled_from(VALUES))}"
    if kind == "group":
        group = draw(st.sampled_from(sorted(GROUPS)))
        return f"{group}={draw(st.sampled_from(GROUPS[group]))}"
    if kind == "list":
        group = draw(st.sampled_from(sorted(NAMES)))
        names = draw(st.lists(st.sampled_from(NAMES[group]), min_size=0, max_size=3))
        return f"{group}=[{','.join(names)}]"
    return f"{draw(st.sampled_from(('nosuchkey', 'test.nosuch', 'method.gradient.nosuch')))}=1"


COMMANDS = st.lists(override(), min_size=1, max_size=3)


def examples(default: int) -> settings:
    return settings(max_examples=EXAMPLES or default, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@examples(150)
@given(COMMANDS)
def test_any_drawn_command_parses_or_is_one_sanity_error(overrides):
    try:
        jobs = compose_jobs(overrides, False)
    except SanityError as err:
        assert "\n" not in str(err) and str(err), overrides
        return
    assert jobs[0].spec is not None


CHEAP = ("method=[gradient]", "metric=[spearman_abs]", "n_images=2", "plots=false")
COSTLY = ("1e9", "inf")  # a valid huge count would make a real run last for hours: the parse test draws those


@examples(8)
@given(st.lists(override().filter(lambda o: not o.endswith(COSTLY)), min_size=1, max_size=2))
def test_a_drawn_run_exits_0_or_2_with_one_line_and_leaves_nothing_behind(sanity, tmp_path, overrides):
    from test_run_dirs import checksums, finished_run

    earlier = tmp_path / "results" / "earlier run"
    if not earlier.exists():
        finished_run(earlier)
    before = checksums(tmp_path / "results")
    listing = sorted(p.relative_to(tmp_path) for p in (tmp_path / "results").rglob("*"))
    result = sanity("run", *CHEAP, *overrides, "hydra.run.dir=results/fuzz")
    assert result.returncode in (0, 2), (overrides, result.stderr[-2000:])
    assert "Traceback" not in result.stdout + result.stderr, overrides
    after = checksums(tmp_path / "results")
    assert all(after.get(k) == v for k, v in before.items()), overrides  # the finished run is never touched
    if result.returncode == 2:
        errors = [line for line in result.stderr.splitlines() if line.startswith("sanity: error:")]
        assert len(errors) == 1, (overrides, result.stderr[-2000:])
        assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "results").rglob("*")) == listing, overrides
    else:
        import shutil

        shutil.rmtree(tmp_path / "results" / "fuzz")


def test_the_drawn_space_covers_every_registry():
    """The keys come from the declarations, not a hand-kept list: a new parameter is fuzzed from the day it is
    declared."""
    assert {"seed", "n_images", "test.init", "test.shift", "method.integrated_gradients.rule",
            "metric.hog_pearson.pixels_per_cell", "data.source", "model.gradcam_layer"} <= set(KEYS)
    assert Path(PATHS[3]).name == "README.md"
