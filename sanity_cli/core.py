"""The run, top to bottom: data -> model (train or load) -> explain -> randomize -> compare -> Result, in memory.

`run_check(spec)` is the whole experiment of one RunSpec: no Hydra, no command line, no files unless a unit
store is given (the CLI's run directory, which makes a killed run resumable) and the model cache trains or
loads the MNIST models. The CLI writes the Result into the run directory (sinks.write_run); check() returns it.

Paper: Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018, Sec. 3 (model randomization,
cascading and independent) and Sec. 4 (data randomization); the tests after it: sanity_cli/sanity_tests.py.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import pandas as pd

from . import edges, methods, metrics, plans, report, seeds, training
from .checks import SelfChecks
from .errors import SanityError
from .spec import MethodRun, RunSpec
from .stages import Comparison  # noqa: F401 (tabulate's argument)
from .units import MemoryStore, UnitStore

LOG = logging.getLogger("sanity").info


class Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


@dataclass
class Result:
    """What one check found: its tables (pandas), the maps shown in the grids, and what makes it reproducible."""

    spec: RunSpec
    metrics: pd.DataFrame           # metrics.csv: one row per stage, method, metric, repeat and image
    summary: pd.DataFrame           # summary.csv: mean, 95% interval per stage, method and metric
    null: pd.DataFrame              # null.csv: the null's raw values (two different images' maps)
    verdict: pd.DataFrame           # verdict.csv: PASS / FAIL / INCONCLUSIVE per method, with its null
    models: pd.DataFrame            # models.csv: each model used, its cache key and accuracies
    images: np.ndarray              # the explained images, in [0, 1]
    image_ids: np.ndarray
    targets: np.ndarray
    captions: list[str]
    stages: list[str]               # the stages' names (the grids' columns)
    grids: dict[str, dict[str, np.ndarray]]  # mode -> {method: (grid images, stages, H, W)}
    controls: set[str]
    provenance: dict                # the data's provenance (manifest)
    self_checks: dict
    phases: dict[str, float]
    started: float
    resumed_units: int = 0
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # keep_maps: {method: (images, stages, H, W)}
    edges: pd.DataFrame = field(default_factory=pd.DataFrame)  # edges.csv: each map's similarity with edge maps

    def plot(self, image: int = 0):
        """The saliency grid of one explained image (methods x stages, the absolute maps normalised as the paper's)
        as a matplotlib Figure (its cells are figure-level images and texts, not Axes); save() writes the signed
        grids too."""
        from .plots import saliency_grid_figure

        source = self.maps or self.grids["absolute"]
        maps = {name: m[image:image + 1] for name, m in source.items()}
        return saliency_grid_figure(self.images[image:image + 1], maps, self.stages, "absolute")

    def save(self, directory):
        """The command line's files (tables, grids, plots, models, manifest, report.html) in `directory` (new or
        empty)."""
        from pathlib import Path

        from .sinks import write_run

        target = Path(directory).expanduser()
        if target.exists() and any(target.iterdir()):
            raise SanityError(f"{target} is not empty; save into a new or empty folder")
        write_run(self, target)
        return target


def choose_images(dataset, n_images: int, seed: int, choice: str = "random") -> np.ndarray:
    """Indices of the explained test images: a seeded sample without replacement, in ascending order, or the
    first n_images (choice='first', as the released notebooks' x_test[:10]); every photo of a folder."""
    if dataset.name == "images":  # a folder of photos: explain each of them, up to n_images
        return np.arange(min(n_images, len(dataset.x_test)))
    if n_images > len(dataset.x_test):
        raise SanityError(f"n_images={n_images} but the test split has only {len(dataset.x_test)} images; "
                          f"lower n_images")
    if choice == "first":
        return np.arange(n_images)
    return np.sort(seeds.rng(seed, seeds.IMAGES).choice(len(dataset.x_test), size=n_images, replace=False))


def applicable_methods(spec: RunSpec, model, log) -> list[MethodRun]:
    """The configured methods, the Grad-CAM family's layer filled from the model; those needing a conv layer are
    skipped (one log line) on a model without one. Nothing left to explain is one error line."""
    runs, skipped = [], []
    layer = spec.arch.default_gradcam_layer(model)
    for run in spec.methods:
        if run.method.needs_conv_layer and not run.params.get("layer"):
            if not layer:
                log(f"method: {run.name} skipped: {spec.model_name} has no conv layer")
                skipped.append(run.name)
                continue
            run = replace(run, params={**run.params, "layer": layer})
        runs.append(run)
    if not runs:
        raise SanityError(f"nothing to explain: {', '.join(skipped)} need a conv layer, and {spec.model_name} has "
                          f"none; choose other methods (e.g. method=[gradient,guided_backprop]) or a model with a "
                          f"conv layer")
    return runs


def choose_targets(spec: RunSpec, model, images, labels) -> np.ndarray:
    """The class explained: the trained model's top-1 prediction, kept at every stage (`predicted`, and the
    start of `predicted_per_stage`), or the label (`label`; photos without a label keep the prediction)."""
    logits = methods.engine.engine_for(model, spec.engine).predict_logits(images)
    predicted = logits.argmax(axis=1).astype(np.int32)
    if spec.target == "label":
        return np.where(labels >= 0, labels, predicted).astype(np.int32)
    return predicted


def guided_methods(runs) -> set[str]:
    """Configured methods built on Guided Backprop (directly, or as SmoothGrad/VarGrad's base)."""
    return {run.name for run in runs if run.method.uses_guided_relu
            or (run.params.get("base") and methods.get(run.params["base"]).uses_guided_relu)}


def load_data(spec: RunSpec, model_shape: Callable[[], tuple], log):
    """The data set, and what only its images can tell about the metrics (a HOG cell no larger than the maps)."""
    dataset = spec.data.load(spec.data_values, model_shape() if spec.data.name == "folder" else None, log)
    for metric, params in spec.metrics.items():
        metrics.check_shape(metric, params, dataset.x_test.shape[1:3])
    return dataset


def load_models(spec: RunSpec, dataset, log) -> tuple:
    """(the trained model, the permuted-label model or None), as the architecture gives them: pretrained weights,
    your file (or check()'s live model), or the model cache (trained there when missing)."""
    cache = functools.partial(training.load_or_train, cache_dir=spec.cache_dir)
    trained = spec.arch.trained_model(dataset, "true", spec.seed, spec.train, cache, log, copies=spec.trains_copies)
    permuted = spec.arch.trained_model(dataset, "permuted", spec.seed, spec.train, cache, log,
                                       copies=True) if spec.trains_copies else None
    return trained, permuted


def run_check(spec: RunSpec, *, dataset=None, store: UnitStore | MemoryStore | None = None, log=LOG,
              keep_maps: bool = False) -> Result:
    """One sanity check of `spec`: data (spec.data, or `dataset`), models, methods, the test's plan, tables.
    `store`: where finished units are saved and resumed from (None: in memory); `keep_maps`: Result.maps holds
    every image's normalised map at every stage (the Python API)."""
    from .manifest import device_summary

    timer, started = Timer(), time.time()
    units: UnitStore | MemoryStore = store or MemoryStore()
    log(f"device: {device_summary()}")
    with timer.phase("data"):
        dataset = dataset or load_data(spec, spec.arch.input_shape, log)
        image_ids = choose_images(dataset, spec.n_images, spec.seed, spec.image_choice)
        shown, labels = dataset.x_test[image_ids], dataset.y_test[image_ids]
        images = spec.arch.to_model_space(shown)
    with timer.phase("model"):
        trained, permuted = load_models(spec, dataset, log)
    runs = applicable_methods(spec, trained.model, log)
    targets = choose_targets(spec, trained.model, images, labels)
    checks, guided = SelfChecks(log), guided_methods(runs)
    if guided and spec.arch.guided_is_gradient:
        log(f"self-check skipped: Guided Backprop equals Gradient on {spec.model_name} by construction (one ReLU, "
            f"a positive upstream gradient: paper Sec. 5)")
    elif guided:
        checks.check_guided_swap(methods.engine.engine_for(trained.model, spec.engine), images, targets)
    units.check_inputs({"images_sha256": hashlib.sha256(images.tobytes()).hexdigest(),
                        "image_ids": image_ids.tolist(), "targets": targets.tolist(),
                        "models": [t.key for t in (trained, permuted) if t is not None]})
    log(f"run: {spec.test.name} test, {len(runs)} methods x {len(image_ids)} images, metrics {', '.join(spec.metrics)}")
    with timer.phase("explain_randomize_compare"):
        comparison = plans.compare_all(spec, trained.model, runs, images, targets, image_ids, units, checks,
                                       permuted=permuted, keep_maps=keep_maps, log=log)
        checks.finish()
    return tabulate(spec, comparison, runs, checks, guided, dataset, image_ids, shown, targets,
                    [t for t in (trained, permuted) if t is not None], timer, started, units.resumed)


def tabulate(spec: RunSpec, comparison: Comparison, runs, checks: SelfChecks, guided, dataset, image_ids, shown,
             targets, models, timer: Timer, started: float, resumed: int) -> Result:
    """The Result: the tidy metrics, their summary, the null, each method's verdict, the models' table."""
    table = comparison.table(spec.model_name, spec.test.name)
    summary = report.summarize(table)
    null = comparison.null_table(spec.seed)
    controls = {run.name for run in runs if not run.method.needs_model}
    options = dict(rule=spec.verdict.rule, threshold=spec.verdict.threshold, null=report.summarize_null(null),
                   problems=checks.problems(guided), metrics=table,
                   invariance=comparison.max_difference if spec.test.family == "input_invariance" else None,
                   tolerance=float(spec.test_values.get("tolerance", 0.0)))
    if spec.verdict.metric == report.ALL_METRICS:
        verdict = report.combined_verdict(summary, spec.test.name, spec.verdict_metrics, controls, **options)
    else:
        verdict = report.verdict(summary, spec.test.name, spec.verdict.metric, controls, **options)
    captions = [f"#{i} {dataset.class_names[t] if t < len(dataset.class_names) else t}"
                for i, t in zip(image_ids, targets)]
    models_table = models_frame(spec, models)
    return Result(spec=spec, metrics=table, summary=summary, null=null, verdict=verdict, models=models_table,
                  images=shown, image_ids=image_ids, targets=targets, captions=captions,
                  stages=list(comparison.stage_labels),
                  grids={mode: comparison.grids(mode) for mode in ("absolute", "diverging")}, controls=controls,
                  provenance=dataset.provenance, self_checks=checks.as_dict(), phases=dict(timer.seconds),
                  started=started, resumed_units=resumed,
                  maps={name: np.stack(maps, axis=1) for name, maps in comparison.all_maps.items()}
                  if comparison.keep_maps else {},
                  edges=edges.summarize(comparison.edge_table(spec.model_name, spec.test.name),
                                        comparison.edge_null_table(spec.seed)))


MODEL_COLUMNS = ("model", "labels", "cache_key", "cache", "epochs_run", "train_images", "train_accuracy",
                 "running_train_accuracy", "validation_accuracy", "test_accuracy", "train_seconds", "target_accuracy",
                 "memorised")


def models_frame(spec: RunSpec, models) -> pd.DataFrame:
    """models.csv: one row per model, its columns in one order whether the model was trained now or loaded from the
    cache (MODEL_COLUMNS first, any others after them in name order)."""
    rows = [{"model": spec.model_name, "labels": t.labels, "cache_key": t.key, **t.info} for t in models]
    present = {key for row in rows for key in row}
    columns = [c for c in MODEL_COLUMNS if c in present] + sorted(present - set(MODEL_COLUMNS))
    return pd.DataFrame(rows, columns=columns)


def train_model(spec: RunSpec, log=LOG) -> tuple:
    """`sanity train`: (one model of the spec's architecture trained on `labels`, or loaded from the cache, the
    data set it was trained on)."""
    if not spec.arch.trained_by_sanity:
        raise SanityError(f"sanity train trains the MNIST models; model={spec.model_name} comes pretrained "
                          f"(model.weights=...)")
    dataset = load_data(spec, spec.arch.input_shape, log)
    copies = spec.arch.name == "keras"
    if copies and not len(dataset.x_train):
        raise SanityError(f"sanity train needs training images; data={spec.data.name} has none (x_train, y_train "
                          f"in the .npz)")
    trained = spec.arch.trained_model(dataset, spec.labels, spec.seed, spec.train,
                                      functools.partial(training.load_or_train, cache_dir=spec.cache_dir), log,
                                      copies=copies)
    return trained, dataset
