"""The run, top to bottom: data -> model (train or load) -> explain -> randomize -> compare -> write.

Paper: Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018, Sec. 3 (model randomization,
cascading and independent) and Sec. 4 (data randomization).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from tqdm import tqdm

from . import config as config_checks
from . import data as data_sources
from . import architectures, methods, metrics, randomize, report, sanity_tests, training
from .checks import SelfChecks, finite_rows
from .invariance import check_same_function, max_relative_difference, shift_compensated
from .errors import SanityError
from .io import atomic_path, write_json
from .manifest import build_manifest, device_summary
from .rundir import RunDir, config_fingerprint
from .units import UnitStore, stage_unit

log = logging.getLogger("sanity").info


@dataclass
class Stage:
    """One column of the experiment: stage 0 is the reference (trained / true-label model)."""

    index: int
    block: str                                     # the paper's name of what was randomized at this stage
    blocks: list = field(default_factory=list)     # blocks to re-initialise on top of the previous stage
    restore_first: bool = False                    # independent test: back to trained weights first


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


# ---------------------------------------------------------------- data

def load_data(cfg: DictConfig) -> data_sources.Dataset:
    if cfg.data.get("kind") == "tfds":
        return data_sources.load_tfds_images(cfg.data.name, cfg.data.data_dir, cfg.data.train_split,
                                             cfg.data.test_split, log=log)
    if cfg.data.name == "npz":
        return data_sources.load_npz(cfg.data.path, log=log)
    if cfg.data.name == "folder":
        from .photos import load_folder

        shape = architectures.for_config(cfg.model).input_shape()
        return load_folder(cfg.data.path, size=cfg.data.size or shape[0], channels=shape[2],
                           labels_csv=cfg.data.labels_csv, max_images=cfg.data.max_images, log=log)
    if cfg.data.name == "images":
        from .photos import load_photos

        return load_photos(cfg.data.path, size=cfg.data.size, max_images=cfg.data.max_images,
                           labels_csv=cfg.data.labels_csv, log=log)
    return data_sources.load_dataset(cfg.data.name, cfg.data.source, path=cfg.data.path,
                                     data_dir=cfg.data.data_dir, log=log)


def choose_images(dataset: data_sources.Dataset, n_images: int, seed: int, choice: str = "random") -> np.ndarray:
    """Indices of the explained test images: a seeded sample without replacement, in ascending order, or the
    first n_images (choice='first', as the released notebooks' x_test[:10])."""
    if dataset.name == "images":  # a folder of photos: explain each of them, up to n_images
        return np.arange(min(n_images, len(dataset.x_test)))
    if n_images > len(dataset.x_test):
        raise SanityError(f"n_images={n_images} but the test split has only {len(dataset.x_test)} images; "
                          f"lower n_images")
    if choice == "first":
        return np.arange(n_images)
    rng = np.random.default_rng([seed, 1])
    return np.sort(rng.choice(len(dataset.x_test), size=n_images, replace=False))


# ---------------------------------------------------------------- model

def load_model(cfg: DictConfig, dataset, labels: str) -> training.TrainedModel:
    """The trained (or permuted-label) model: pretrained weights (Inception; your own Keras file), or from the
    model cache / training (the MNIST models; fresh copies of your Keras model for the data test)."""
    arch = architectures.for_config(cfg.model)
    arch.check_data(dataset.name)
    if isinstance(arch, architectures.KerasFile):
        from .user_model import check_fits

        model = arch.build()
        check_fits(model, dataset, f"data={dataset.name}")
        trains_copies = sanity_tests.get(cfg.test.name).family == "data_randomization"
        if trains_copies and not len(dataset.x_train):
            raise SanityError(f"test=data trains copies of your model: data={dataset.name} needs training images "
                              f"(x_train, y_train in the .npz)")
        if not trains_copies:  # the file's own weights are the trained model
            log(f"model: {arch.path} ({model.name}, {model.count_params():,} parameters, input "
                f"{tuple(model.input_shape[1:])}, {model.output_shape[-1]} classes)")
            return training.TrainedModel(model, f"keras-{arch.file_digest[:16]}", "true",
                                         {"file": arch.path, "sha256": arch.file_digest, "cache": "file"})
    elif not arch.trained_by_sanity:
        if labels != "true":
            raise SanityError(f"the data randomization test needs a model sanity trains itself; model={arch.name} "
                              f"comes pretrained (use model=mnist_cnn or model=mnist_mlp with test=data)")
        model = arch.build(weights=cfg.model.weights)
        log(f"model: {arch.name} with weights={cfg.model.weights}")
        return training.TrainedModel(model, f"{model.name}-{cfg.model.weights}", "true",
                                     {"weights": str(cfg.model.weights), "cache": "keras"})
    return training.load_or_train(arch, dataset, labels, cfg.seed, config_checks.train_settings(cfg),
                                  cache_dir=cfg.cache_dir, log=log)


# ---------------------------------------------------------------- explain

def applicable_methods(cfg: DictConfig, model) -> list[config_checks.MethodRun]:
    """The configured methods, with GradCAM's layer filled from the model config; GradCAM-family methods
    are skipped (with a log line) on a model that has no conv layer."""
    runs = []
    layer = cfg.model.get("gradcam_layer") or architectures.for_config(cfg.model).default_gradcam_layer(model)
    for run in config_checks.method_runs(cfg):
        spec = methods.get(run.kind)
        if spec.needs_conv_layer and not run.params.get("layer"):
            if not layer:
                log(f"method: {run.name} skipped: {cfg.model.name} has no conv layer")
                continue
            run.params["layer"] = layer
        runs.append(run)
    return runs


def explain_all(model, runs, images, targets, cfg: DictConfig, stage: int, repeat: int,
                input_range=None, logits: bool = False):
    """Every method's maps, the gradient-based ones sharing each chunk's model calls (methods.explain_many);
    `input_range` (default the architecture's) is what `baseline: black` means. A test with smoothing (sMPRT)
    explains the noisy copies of SMOOTHING_CHUNK images at a time in one batched call and averages them: memory
    stays bounded, and a fixed chunk keeps the maps of noise methods (whose own noise is seeded by the image's
    place in the call) independent of batch_size. With `logits`, returns (maps, the model's logits of the
    images), from the gradient passes where they give them."""
    input_range = input_range or architectures.for_config(cfg.model).input_range
    copies = int(cfg.test.samples) if sanity_tests.get(cfg.test.name).smoothing else 1
    requests = [(run.name, run.kind, run.params,
                 [cfg.seed, stage, repeat] if methods.get(run.kind).reseed_per_stage else cfg.seed) for run in runs]
    smoothed = [r for r in requests if copies > 1 and methods.get(r[1]).needs_model]  # controls are not smoothed

    def explain(x, t, chosen, with_logits=False):
        return methods.explain_many(model, x, t, chosen, batch_size=cfg.batch_size, input_range=input_range,
                                    logits=with_logits)

    maps, seen_logits = {}, None
    if len(smoothed) < len(requests):
        maps = explain(images, targets, [r for r in requests if r not in smoothed], logits)
        maps, seen_logits = maps if logits else (maps, None)
    chunks = [explain(noisy_copies(images[i:i + SMOOTHING_CHUNK], copies, float(cfg.test.noise_magnitude), cfg.seed,
                                   first=i), np.tile(targets[i:i + SMOOTHING_CHUNK], copies), smoothed)
              for i in range(0, len(images), SMOOTHING_CHUNK)] if smoothed else []
    for name, *_ in smoothed:
        maps[name] = np.concatenate([chunk[name].reshape((copies, -1, *images.shape[1:])).mean(axis=0)
                                     for chunk in chunks])
    maps = {name: maps[name] for name, *_ in requests}
    if not logits:
        return maps
    return maps, seen_logits if seen_logits is not None else methods.engine.engine_for(model).predict_logits(
        images, batch_size=cfg.batch_size)


SMOOTHING_CHUNK = 4  # images whose noisy copies go through one explain call (sMPRT)


def noisy_copies(images: np.ndarray, copies: int, magnitude: float, seed: int, first: int = 0) -> np.ndarray:
    """sMPRT's inputs (Hedström et al. 2023): copies - 1 noisy copies of every image, noise N(0, (magnitude x
    (max x - min x))^2) drawn per image from rng(seed, 7, its index first + k), then the noise-free image;
    copy-major, (copies * N, ...), float32. The same noise at every stage and for any chunking, so stages differ
    only by the model."""
    out = np.empty((copies, *images.shape), np.float32)
    out[-1] = images
    for k, image in enumerate(images):
        span = float(image.max() - image.min())
        noise = np.random.default_rng([int(seed), 7, first + k]).standard_normal((copies - 1, *image.shape))
        out[:-1, k] = image + (magnitude * span) * noise
    return out.reshape((-1, *images.shape[1:]))


def choose_targets(cfg: DictConfig, model, images, labels) -> np.ndarray:
    """The class explained: the trained model's top-1 prediction, kept at every stage (`predicted`), or the
    label (`label`). With `predicted_per_stage` (the released notebooks' choice) each randomized model's own
    top-1 class is explained instead; see stage_targets."""
    logits = methods.engine.engine_for(model).predict_logits(images, batch_size=cfg.batch_size)
    predicted = logits.argmax(axis=1).astype(np.int32)
    if cfg.target == "label":  # photos without a label (-1) keep the prediction
        return np.where(labels >= 0, labels, predicted).astype(np.int32)
    return predicted


def stage_targets(cfg: DictConfig, targets: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """The classes explained at one stage, given the stage model's logits."""
    if cfg.target == "predicted_per_stage":
        return logits.argmax(axis=1).astype(np.int32)
    return targets


# ---------------------------------------------------------------- randomize

def plan_stages(test: str, blocks: list[randomize.Block], order: str = "top_down") -> list[Stage]:
    """cascading: stage k randomizes blocks 1..k (one more block per stage), from the logits down (`top_down`, the
    paper) or from the input up (`bottom_up`: Binder et al. 2023; Hedström et al. 2023 show that top-down leaves
    the lower layers, which dominate some methods' maps, intact until the last stages); independent: stage k
    randomizes block k alone (`order` only sets the column order); efficient MPRT: one stage with every block
    (the same weights as cascading's last stage). `blocks` are listed output first."""
    if order not in randomize.ORDERS:
        raise SanityError(f"test.order must be one of {', '.join(randomize.ORDERS)}, got {order!r}")
    spec = sanity_tests.get(test)
    cumulative = spec.cumulative
    stages = [Stage(0, "trained")]
    if spec.all_at_once:  # eMPRT: the trained and the fully randomized model only
        return stages + [Stage(1, "all blocks", list(blocks))]
    for k, block in enumerate(blocks if order == "top_down" else blocks[::-1], start=1):
        stages.append(Stage(k, block.name, [block], restore_first=not cumulative))
    return stages


def randomize_stage(model, stage: Stage, blocks: list[randomize.Block], trained_weights, cfg: DictConfig,
                    repeat: int) -> None:
    if stage.restore_first:
        randomize.restore(model, trained_weights)
    for block in stage.blocks:
        randomize.randomize_block(model, block, seed=randomize.derive_seed(cfg.seed, repeat, blocks.index(block)),
                                  init=cfg.test.init, init_std=cfg.test.init_std,
                                  reset_bn_statistics=cfg.test.reset_bn_statistics)


# ---------------------------------------------------------------- compare

def compare_where_finite(reference: np.ndarray, other: np.ndarray, metric: str,
                         params: dict) -> tuple[np.ndarray, np.ndarray]:
    """metrics.compare of each pair of maps; a pair with NaN/Inf in either map is never compared: its
    similarity is undefined (NaN)."""
    finite = finite_rows(reference) & finite_rows(other)
    values, undefined = np.full(len(finite), np.nan), np.ones(len(finite), bool)
    if finite.any():
        values[finite], undefined[finite] = metrics.compare(reference[finite], other[finite], metric, **params)
    return values, undefined


def compare_stage(reference: dict[str, np.ndarray], maps: dict[str, np.ndarray], metric_params: dict,
                  grid_images: int) -> dict[str, np.ndarray]:
    """One stage's results as arrays (a resumable unit): per method and metric the similarity of each
    image's map with its reference map and whether it was undefined, plus the normalised maps shown in the
    grids."""
    unit = {}
    for name, explained in maps.items():
        unit[f"nonfinite/{name}"] = ~(finite_rows(reference[name]) & finite_rows(explained))
        unit[f"maxdiff/{name}"] = max_relative_difference(reference[name], explained)
        for metric, params in metric_params.items():
            values, undefined = compare_where_finite(reference[name], explained, metric, params)
            unit[f"value/{name}/{metric}"] = np.asarray(values, np.float64)
            unit[f"undefined/{name}/{metric}"] = np.asarray(undefined, bool)
        explained = np.where(np.isfinite(explained), explained, 0.0)
        shown = explained[:grid_images]
        unit[f"absolute/{name}"] = metrics.normalize_absolute(shown)
        unit[f"diverging/{name}"] = metrics.normalize_diverging(shown)
    return unit


class Comparison:
    """Collects every stage's metric rows and the normalised maps shown in the grids. Each stage is one unit
    of work, saved as it finishes and skipped when a killed run is resumed."""

    def __init__(self, cfg: DictConfig, runs, image_ids: np.ndarray, units: UnitStore, checks: SelfChecks,
                 keep_maps: bool = False):
        self.cfg = cfg
        self.keep_maps = keep_maps  # the Python API's Result.maps: every image's normalised map at every stage
        self.all_maps: dict[str, list[np.ndarray]] = {run.name: [] for run in runs}
        self.checks = checks
        self.names = [run.name for run in runs]
        self.metric_params = config_checks.metric_params(cfg)
        self.image_ids = image_ids
        self.units = units
        self.reference: dict[str, np.ndarray] = {}
        self.rows: list[tuple] = []  # (stage, block, method, metric, repeat, values, undefined): one per image each
        self.grid_abs: dict[str, list[np.ndarray]] = {name: [] for name in self.names}
        self.grid_div: dict[str, list[np.ndarray]] = {name: [] for name in self.names}
        self.stage_labels: list[str] = []
        self.max_difference: dict[str, float] = {}  # input invariance: largest relative map change per method
        self._pending: list[tuple[Stage, int, Future]] = []  # stages being compared on the unit store's worker

    def set_reference(self, stage: "Stage", explain) -> None:
        """The reference maps (stage 0), explained now or loaded from a finished unit. A new reference is saved
        on the worker thread, before stage 0's own unit."""
        saved = self.units.load("reference")
        first = None
        if saved is None:
            saved = explain()
            first = functools.partial(self.units.save, "reference", saved)
        self.reference = {name: saved[name] for name in self.names}
        self.add(stage, 0, lambda: self.reference, first)

    def add(self, stage: "Stage", repeat: int, explain, first=None) -> None:
        """Compare the stage's maps (explain() is called only when the unit is not finished yet). The comparison
        and the unit's file (after first(), when given) are made on the unit store's worker thread while the
        caller goes on to the next stage; `finish` records every stage, in order."""
        name = stage_unit(stage.index, repeat)
        unit = self.units.load(name)
        if unit is None:
            explained = explain()

            def compute():
                if first is not None:
                    first()
                return self._compare(explained, repeat)

            job = self.units.finish_later(name, compute)
        else:
            if first is not None:  # the unit survived but what comes first did not (a damaged reference)
                first()
            job = Future()
            job.set_result(unit)
        self._pending.append((stage, repeat, job))

    def _compare(self, explained: dict[str, np.ndarray], repeat: int) -> dict[str, np.ndarray]:
        if self.keep_maps and repeat == 0:
            for method, maps in explained.items():
                self.all_maps[method].append(metrics.normalize_absolute(np.where(np.isfinite(maps), maps, 0.0)))
        return compare_stage(self.reference, explained, self.metric_params, self.cfg.grid_images)

    def finish(self) -> "Comparison":
        """Wait for the stages compared in the background and record their rows, checks and grids in order."""
        pending, self._pending = self._pending, []
        for stage, repeat, job in pending:
            self._record(stage, repeat, job.result())
        return self

    def _record(self, stage: "Stage", repeat: int, unit: dict[str, np.ndarray]) -> None:
        for method in self.names:
            self.checks.record_nonfinite(method, int(unit[f"nonfinite/{method}"].sum()))
            for metric in self.metric_params:
                self.rows.append((stage.index, stage.block, method, metric, repeat, unit[f"value/{method}/{metric}"],
                                  unit[f"undefined/{method}/{metric}"]))
            if stage.index > 0:
                changes = unit[f"maxdiff/{method}"]
                self.max_difference[method] = max(self.max_difference.get(method, 0.0),
                                                  float(np.max(np.where(np.isnan(changes), np.inf, changes))))
            if repeat == 0:
                self.grid_abs[method].append(unit[f"absolute/{method}"])
                self.grid_div[method].append(unit[f"diverging/{method}"])
        if repeat == 0:
            self.stage_labels.append(stage.block)

    def table(self) -> pd.DataFrame:
        """One row per stage, method, metric, repeat and image (report.METRIC_COLUMNS), made in one go."""
        if not self.rows:
            return pd.DataFrame(columns=report.METRIC_COLUMNS)
        n, columns = len(self.image_ids), list(zip(*self.rows))
        per_image = {name: np.repeat(np.asarray(values, dtype=object if name in ("block", "method", "metric")
                                                else np.int64), n)
                     for name, values in zip(("stage", "block", "method", "metric", "repeat"), columns[:5])}
        return pd.DataFrame({"model": self.cfg.model.name, "test": self.cfg.test.name, **per_image,
                             "image": np.tile(self.image_ids, len(self.rows)),
                             "value": np.concatenate(columns[5]).astype(np.float64),
                             "undefined": np.concatenate(columns[6]).astype(bool)})[report.METRIC_COLUMNS]

    def grids(self, mode: str) -> dict[str, np.ndarray]:
        source = self.grid_abs if mode == "absolute" else self.grid_div
        return {name: np.stack(stages, axis=1) for name, stages in source.items()}

    def null_table(self) -> pd.DataFrame:
        """The null's raw values: each method's trained-model maps of two different images, for n // 2 disjoint
        seeded image pairs (report.null_pairs), for every metric (eMPRT's entropy rise too: from one image's map
        to another's)."""
        first, second = report.null_pairs(len(self.image_ids), self.cfg.seed)
        if not len(first):  # a single image has no pair
            return pd.DataFrame(columns=report.NULL_COLUMNS)
        frames = []
        for method in self.names:
            maps = self.reference[method]
            for metric, params in self.metric_params.items():
                values, undefined = compare_where_finite(maps[first], maps[second], metric, params)
                frames.append(pd.DataFrame({"method": method, "metric": metric, "image": self.image_ids[first],
                                            "other_image": self.image_ids[second], "value": values,
                                            "undefined": undefined}))
        return pd.concat(frames, ignore_index=True)[report.NULL_COLUMNS]


def run_model_randomization(cfg, trained, runs, images, targets, image_ids, units: UnitStore,
                            checks: SelfChecks, keep_maps: bool = False) -> Comparison:
    """Paper Sec. 3.1. Randomizing a block is cheap, explaining is not: a resumed run replays the seeded
    re-initialisations of finished stages (so later stages see the same weights) but skips their maps.
    After each stage the logits on the explained images are checked to have changed."""
    model = trained.model
    engine = methods.engine.engine_for(model)
    blocks = architectures.for_config(cfg.model).blocks(model)
    stages = plan_stages(cfg.test.name, blocks, cfg.test.get("order", "top_down"))
    trained_weights = randomize.snapshot(model)
    comparison = Comparison(cfg, runs, image_ids, units, checks, keep_maps)
    # The self-check compares logits computed one way throughout: from the passes that explain each stage
    # (explain_all gives them for free), or, when this run resumes finished stages, predicted for every stage
    # (logits from differently shaped calls differ by float rounding, which could hide an unchanged stage).
    from_passes = not units.resuming()
    logits = None

    def explain(stage: Stage, repeat: int, explained: np.ndarray):
        nonlocal logits
        maps = explain_all(model, runs, images, explained, cfg, stage.index, repeat, logits=from_passes)
        if from_passes:
            maps, logits = maps
        return maps

    def logits_now() -> np.ndarray:
        """The stage's logits: from its passes, or predicted (a resumed run, or a stage explained earlier)."""
        return logits if logits is not None else engine.predict_logits(images, batch_size=cfg.batch_size)

    comparison.set_reference(stages[0], lambda: explain(stages[0], 0, targets))
    trained_logits = logits_now()
    try:
        for repeat in range(cfg.test.repeats):
            randomize.restore(model, trained_weights)
            previous = trained_logits
            for stage in tqdm(stages[1:], desc=f"stages (repeat {repeat})", disable=None):
                randomize_stage(model, stage, blocks, trained_weights, cfg, repeat)
                logits = engine.predict_logits(images, batch_size=cfg.batch_size) \
                    if cfg.target == "predicted_per_stage" else None
                explained = stage_targets(cfg, targets, logits)
                comparison.add(stage, repeat, lambda: explain(stage, repeat, explained))
                logits = logits_now()
                checks.check_stage(stage_unit(stage.index, repeat), stage.block,
                                   trained_logits if stage.restore_first else previous, logits)
                previous = logits
    finally:
        randomize.restore(model, trained_weights)
    return comparison.finish()


def run_data_randomization(cfg, trained, permuted, runs, images, targets, image_ids, units: UnitStore,
                           checks: SelfChecks, keep_maps: bool = False) -> Comparison:
    """Paper Sec. 4: the same images and target classes explained by the true-label and permuted-label models.
    Meaningful only once the permuted-label model has memorised its labels (checked)."""
    checks.check_memorised(permuted.info, config_checks.train_settings(cfg).permuted_target_accuracy)
    comparison = Comparison(cfg, runs, image_ids, units, checks, keep_maps)
    comparison.set_reference(Stage(0, "true_labels"),
                             lambda: explain_all(trained.model, runs, images, targets, cfg, stage=0, repeat=0))
    permuted_logits = methods.engine.engine_for(permuted.model).predict_logits(images, batch_size=cfg.batch_size)
    explained = stage_targets(cfg, targets, permuted_logits)
    comparison.add(Stage(1, "permuted_labels"), 0,
                   lambda: explain_all(permuted.model, runs, images, explained, cfg, stage=1, repeat=0))
    return comparison.finish()


def run_input_invariance(cfg, trained, runs, images, targets, image_ids, units: UnitStore,
                         checks: SelfChecks, keep_maps: bool = False) -> Comparison:
    """Kindermans et al. 2019: the same model function on inputs shifted by c (first-layer bias b - W c, logits
    checked equal); `baseline: black` moves with the shift. The verdict compares each map with its original
    (RunDir units keep the relative differences)."""
    shift = float(cfg.test.shift)
    low, high = (np.asarray(v, np.float32) for v in architectures.for_config(cfg.model).input_range)
    shifted = shift_compensated(trained.model, shift)
    original_logits = methods.engine.engine_for(trained.model).predict_logits(images, batch_size=cfg.batch_size)
    change = check_same_function(original_logits, methods.engine.engine_for(shifted).predict_logits(
        images + np.float32(shift), batch_size=cfg.batch_size), cfg.model.name)
    log(f"input invariance: inputs shifted by {shift:+g}, first-layer bias compensated; logits change at most "
        f"{change:.2g}")
    comparison = Comparison(cfg, runs, image_ids, units, checks, keep_maps)
    comparison.set_reference(Stage(0, "original"),
                             lambda: explain_all(trained.model, runs, images, targets, cfg, stage=0, repeat=0))
    comparison.add(Stage(1, f"shifted {shift:+g}"), 0,
                   lambda: explain_all(shifted, runs, images + np.float32(shift), targets, cfg, stage=1, repeat=0,
                                       input_range=(low + shift, high + shift)))
    return comparison.finish()


def other_classes(targets: np.ndarray, classes: int, seed: int) -> np.ndarray:
    """For each target a class drawn uniformly from the other classes (seeded): Sixt et al.'s random logit."""
    draw = np.random.default_rng([int(seed), 11]).integers(0, classes - 1, size=len(targets))
    return (draw + (draw >= targets)).astype(np.int32)  # skips the target itself


def run_random_logit(cfg, trained, runs, images, targets, image_ids, units: UnitStore,
                     checks: SelfChecks, keep_maps: bool = False) -> Comparison:
    """Sixt et al. 2020: the same model and images, the explanation of another (random) class compared with the
    explanation of the class explained so far."""
    classes = int(trained.model.output_shape[-1])
    others = other_classes(targets, classes, cfg.seed)
    comparison = Comparison(cfg, runs, image_ids, units, checks, keep_maps)
    comparison.set_reference(Stage(0, "explained class"),
                             lambda: explain_all(trained.model, runs, images, targets, cfg, stage=0, repeat=0))
    comparison.add(Stage(1, "random other class"), 0,
                   lambda: explain_all(trained.model, runs, images, others, cfg, stage=1, repeat=0))
    return comparison.finish()


def guided_methods(runs) -> set[str]:
    """Configured methods built on Guided Backprop (directly, or as SmoothGrad/VarGrad's base)."""
    return {run.name for run in runs
            if methods.get(run.kind).uses_guided_relu
            or (run.params.get("base") and methods.get(run.params["base"]).uses_guided_relu)}


# ---------------------------------------------------------------- write

def write_outputs(run_dir: Path, cfg, comparison: Comparison, runs, display_images, captions,
                  problems: dict[str, list[str]]) -> pd.DataFrame:
    from . import plots

    table = comparison.table()
    summary = report.summarize(table)
    null = comparison.null_table()
    controls = {run.name for run in runs if not methods.get(run.kind).needs_model}
    verdict = report.verdict(summary, cfg.test.name, config_checks.verdict_metric(cfg), controls, rule=cfg.verdict.rule,
                             threshold=cfg.verdict.threshold, null=report.summarize_null(null),
                             problems=problems, metrics=table,
                             invariance=(comparison.max_difference
                                         if sanity_tests.get(cfg.test.name).family == "input_invariance" else None),
                             tolerance=float(cfg.test.get("tolerance", 0.0)))
    for name, frame in (("metrics.csv", table), ("summary.csv", summary), ("null.csv", null),
                        ("verdict.csv", verdict)):
        with atomic_path(run_dir / name) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.8g")
    if cfg.plots:
        title = f"{cfg.model.name} on {cfg.data.name}: {cfg.test.name} test"
        shown = display_images[: cfg.grid_images]
        for mode in ("absolute", "diverging"):  # one grid per image, as the paper's Fig. 2
            grids = comparison.grids(mode)
            for k in range(len(shown)):
                plots.saliency_grid(run_dir / grid_file(mode, k), shown[k:k + 1],
                                    {method: maps[k:k + 1] for method, maps in grids.items()},
                                    comparison.stage_labels, mode, input_captions=captions[k:k + 1],
                                    title=f"{title} ({mode} maps)")
        chosen_metrics = list(comparison.metric_params)
        if summary["stage"].max() == 1:  # one comparison (data, random logit, invariance, eMPRT): bars
            plots.data_test_bars(run_dir / "similarity.png", summary[summary["stage"] == 1], chosen_metrics,
                                 title=title, controls=controls)
        else:
            plots.similarity_curves(run_dir / "similarity.png", summary, chosen_metrics, title=title,
                                    controls=controls)
    return verdict


def grid_file(mode: str, index: int) -> str:
    """The saliency grid of the index-th shown image (0-based): grid_absolute_1.png, grid_diverging_1.png, ..."""
    return f"grid_{mode}_{index + 1}.png"


def model_rows(cfg, *trained_models) -> pd.DataFrame:
    return pd.DataFrame([{"model": cfg.model.name, "labels": t.labels, "cache_key": t.key, **t.info}
                         for t in trained_models])


def report_finished(run_dir: RunDir) -> Path:
    """`resume=true` on a finished run of the same config: nothing to do; show its verdict again."""
    print(f"already complete: {run_dir}")
    if not (run_dir.path / "report.html").exists():  # killed after its manifest, or from before pages existed
        from .pages import run_page

        run_page(run_dir.path)
    verdict_file = run_dir.path / "verdict.csv"
    if verdict_file.exists():
        print(report.format_verdict(pd.read_csv(verdict_file)))
    return run_dir.path


def run(cfg: DictConfig, run_dir: Path | RunDir, validated: bool = False, collect: dict | None = None) -> Path:
    """`sanity run`: one randomization test, all outputs written to run_dir (a path, or a RunDir the caller has
    claimed; `validated`: the caller already ran config.validate on this cfg, as the CLI does). `collect` (the
    Python API) receives the explained images and every normalised map ("images", "maps", "stages")."""
    timer, started = Timer(), time.time()
    if not validated:
        config_checks.validate(cfg)
    directory = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    run_dir = directory.path
    owned = not directory.claimed  # the CLI claims (and later releases) the directory before Hydra writes to it
    if directory.check_claim(config_fingerprint(cfg), resume=cfg.resume):
        return report_finished(directory)
    directory.ensure_writable()
    units = UnitStore(directory, config_fingerprint(cfg), log=log)
    resumed_units = units.open()
    methods.engine.set_jit_compile(cfg.get("jit_compile", False))
    methods.engine.set_precision(cfg.get("precision", "float32"))
    try:
        log(f"device: {device_summary()}")
        with timer.phase("data"):
            dataset = load_data(cfg)
            image_ids = choose_images(dataset, cfg.n_images, cfg.seed, cfg.get("image_choice", "random"))
            shown, labels = dataset.x_test[image_ids], dataset.y_test[image_ids]
            images = architectures.for_config(cfg.model).to_model_space(shown)
        with timer.phase("model"):
            trained = load_model(cfg, dataset, "true")
            family = sanity_tests.get(cfg.test.name).family
            permuted = load_model(cfg, dataset, "permuted") if family == "data_randomization" else None
        runs = applicable_methods(cfg, trained.model)
        targets = choose_targets(cfg, trained.model, images, labels)
        checks, guided = SelfChecks(log), guided_methods(runs)
        if guided:
            checks.check_guided_swap(methods.engine.engine_for(trained.model), images, targets, cfg.batch_size)
        units.check_inputs({"images_sha256": hashlib.sha256(images.tobytes()).hexdigest(),
                            "image_ids": image_ids.tolist(), "targets": targets.tolist(),
                            "models": [t.key for t in (trained, permuted) if t is not None]})
        log(f"run: {cfg.test.name} test, {len(runs)} methods x {len(image_ids)} images, "
            f"metrics {', '.join(cfg.metric)}")
        with timer.phase("explain_randomize_compare"):
            keep = collect is not None
            if family == "data_randomization":
                comparison = run_data_randomization(cfg, trained, permuted, runs, images, targets, image_ids, units,
                                                    checks, keep)
            elif family == "random_logit":
                comparison = run_random_logit(cfg, trained, runs, images, targets, image_ids, units, checks, keep)
            elif family == "input_invariance":
                comparison = run_input_invariance(cfg, trained, runs, images, targets, image_ids, units, checks,
                                                  keep)
            else:
                comparison = run_model_randomization(cfg, trained, runs, images, targets, image_ids, units, checks,
                                                     keep)
            checks.finish()
            if keep:
                collect.update(images=shown, stages=list(comparison.stage_labels),
                               maps={name: np.stack(maps, axis=1) for name, maps in comparison.all_maps.items()})
        with timer.phase("write"):
            captions = [f"#{i} {dataset.class_names[t] if t < len(dataset.class_names) else t}"
                        for i, t in zip(image_ids, targets)]
            verdict = write_outputs(run_dir, cfg, comparison, runs, shown, captions,
                                    checks.problems(guided))
            models_table = model_rows(cfg, *[t for t in (trained, permuted) if t is not None])
            with atomic_path(run_dir / "models.csv") as tmp:
                models_table.to_csv(tmp, index=False, float_format="%.6g")
        write_json(run_dir / "manifest.json", build_manifest(
            cfg, dataset=dataset, models=models_table.to_dict(orient="records"), phases=timer.seconds,
            started=started, extra={"explained_images": image_ids.tolist(), "targets": targets.tolist(),
                                    "captions": captions,
                                    "config_fingerprint": units.fingerprint, "resumed_units": resumed_units,
                                    "self_checks": checks.as_dict()}))
        directory.remove_units()
        from .pages import run_page

        run_page(run_dir)  # report.html, built from the files just written
    finally:
        units.wait()  # units still being compared and saved on the worker thread (a failed run resumes from them)
        if owned:
            directory.release()
    print(f"\n{report.verdict_heading(cfg.verdict, cfg.test.name, cfg.test.get('tolerance'))}:")
    print(report.format_verdict(verdict))
    if permuted is not None:
        print(f"\nmodels: true-label test accuracy {trained.info['test_accuracy']:.3f}; permuted-label train "
              f"accuracy {permuted.info['train_accuracy']:.3f} (memorisation target "
              f"{config_checks.train_settings(cfg).permuted_target_accuracy})")
    print(f"\nresults: {run_dir}")
    return run_dir


def train(cfg: DictConfig, run_dir: Path | RunDir, validated: bool = False) -> training.TrainedModel:
    """`sanity train`: train (or load from the cache) one model and report its accuracies."""
    started = time.time()
    if not validated:
        config_checks.validate(cfg)
    if not architectures.for_config(cfg.model).trained_by_sanity:
        raise SanityError(f"sanity train trains the MNIST models; model={cfg.model.name} comes pretrained "
                          f"(model.weights=...)")
    directory = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    run_dir = directory.path
    directory.check_claim(config_fingerprint(cfg))
    directory.ensure_writable()
    dataset = load_data(cfg)
    labels = training.normalize_labels_mode(cfg.labels)
    arch = architectures.for_config(cfg.model)
    if isinstance(arch, architectures.KerasFile):  # a fresh copy of your model, as the data test trains it
        if not len(dataset.x_train):
            raise SanityError(f"sanity train needs training images; data={cfg.data.name} has none (x_train, y_train "
                              f"in the .npz)")
        trained = training.load_or_train(arch, dataset, labels, cfg.seed, config_checks.train_settings(cfg),
                                         cache_dir=cfg.cache_dir, log=log)
    else:
        trained = load_model(cfg, dataset, labels)
    models_table = model_rows(cfg, trained)
    write_json(run_dir / "manifest.json", build_manifest(cfg, dataset=dataset,
                                                         models=models_table.to_dict(orient="records"),
                                                         phases={}, started=started, command="train"))
    directory.remove_units()  # the claim's lock and fingerprint, once the manifest says it is finished
    print(f"{trained.labels}-label {cfg.model.name}: train accuracy {trained.info['train_accuracy']:.3f}, "
          f"test accuracy {trained.info['test_accuracy']:.3f} (cache key {trained.key}, {trained.info['cache']})")
    return trained
