"""Explain and randomize: one plan per test family, each a generator of the steps to explain (the reference stage,
then the comparison stages), and the one driver `run_plan` that explains each step, compares it with the
reference (stages.Comparison) and lets the plan check what it needs (logits changed, the shift absorbed).

Paper: Adebayo et al. 2018, Sec. 3.1 (model randomization, cascading and independent) and Sec. 4 (data
randomization); Kindermans et al. 2019 (input invariance); Sixt et al. 2020 (random logit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
from tqdm import tqdm

from . import edges, methods, randomize, seeds
from .checks import SelfChecks
from .errors import SanityError
from .invariance import check_same_function, shift_compensated
from .methods import noise
from .spec import MethodRun, RunSpec
from .stages import Comparison, Stage
from .units import stage_unit

SMOOTHING_CHUNK = 4  # images whose noisy copies go through one explain call (sMPRT)


@dataclass
class Context:
    """What every plan works on: the run's spec, its models, methods (Grad-CAM layers filled in), the explained
    images in the model's input space, their target classes and the self-checks."""

    spec: RunSpec
    model: Any                        # the trained (true-label) Keras model
    permuted: Any                     # the permuted-label model (a TrainedModel; data test), or None
    runs: list[MethodRun]
    images: np.ndarray
    targets: np.ndarray
    checks: SelfChecks
    log: Callable[[str], None]

    def predict(self, model, images=None) -> np.ndarray:
        return methods.engine.engine_for(model, self.spec.engine).predict_logits(self.images if images is None
                                                                                  else images)


@dataclass
class Step:
    """One stage to explain: the model, images and classes to explain, what `baseline: black` means there; the
    driver fills in the logits of the images (from the gradient passes, or predicted) when the plan asks."""

    stage: Stage
    repeat: int
    model: Any
    images: np.ndarray
    targets: np.ndarray
    input_range: tuple | None = None
    wants_logits: bool = False
    logits: np.ndarray | None = field(default=None, repr=False)


def explain_all(ctx: Context, step: Step, logits: bool = False):
    """Every method's maps of the step, the gradient-based ones sharing each chunk's model calls
    (methods.explain_many). A test with smoothing (sMPRT) explains the noisy copies of SMOOTHING_CHUNK images at a
    time in one batched call and averages them: memory stays bounded, and a fixed chunk keeps the maps of noise
    methods (whose own noise is seeded by the image's place in the call) independent of batch_size. With
    `logits`, returns (maps, the model's logits of the images), from the gradient passes where they give them."""
    spec = ctx.spec
    input_range = step.input_range or spec.arch.input_range
    copies = int(spec.test_values["samples"]) if spec.test.smoothing else 1
    requests = [(run.name, run.kind, run.params, [spec.seed, step.stage.index, step.repeat]
                 if run.method.reseed_per_stage else spec.seed) for run in ctx.runs]
    smoothed = [r for r in requests if copies > 1 and methods.get(r[1]).needs_model]  # controls are not smoothed

    def explain(x, t, chosen, with_logits=False):
        return methods.explain_many(step.model, x, t, chosen, spec.engine, input_range=input_range,
                                    logits=with_logits)

    maps, seen = {}, None
    if len(smoothed) < len(requests):
        maps = explain(step.images, step.targets, [r for r in requests if r not in smoothed], logits)
        maps, seen = maps if logits else (maps, None)
    for i in range(0, len(step.images) if smoothed else 0, SMOOTHING_CHUNK):
        chunk = step.images[i:i + SMOOTHING_CHUNK]
        noisy = noisy_copies(chunk, copies, float(spec.test_values["noise_magnitude"]), spec.seed, first=i)
        explained = explain(noisy, np.tile(step.targets[i:i + SMOOTHING_CHUNK], copies), smoothed)
        for name, *_ in smoothed:
            maps.setdefault(name, []).append(explained[name].reshape((copies, -1, *chunk.shape[1:])).mean(axis=0))
    maps = {name: np.concatenate(maps[name]) if isinstance(maps[name], list) else maps[name]
            for name, *_ in requests}
    if not logits:
        return maps
    return maps, seen if seen is not None else ctx.predict(step.model, step.images)


def noisy_copies(images: np.ndarray, copies: int, magnitude: float, seed: int, first: int = 0) -> np.ndarray:
    """sMPRT's inputs (Hedström et al. 2023): copies - 1 noisy copies of every image, noise N(0, (magnitude x
    (max x - min x))^2), then the noise-free image; copy-major, (copies * N, ...), float32. The noise is the one
    SmoothGrad draws (the engine's stateless Philox normals), seeded per image from the run's seed and the image's
    index first + k (seeds.SMOOTHING), so it is the same at every stage and for any chunking."""
    images = np.asarray(images, np.float32)
    out = np.empty((copies, *images.shape), np.float32)
    out[-1] = images
    if copies > 1:
        per_image = noise.image_seeds([seed, seeds.SMOOTHING], first + len(images))[first:]
        unit = noise.unit_noise(per_image, copies - 1, images.shape[1:])  # (N, copies - 1, ...)
        spans = (images.reshape(len(images), -1).max(axis=1) - images.reshape(len(images), -1).min(axis=1))
        scale = (magnitude * spans).reshape((len(images), 1) + (1,) * (images.ndim - 1)).astype(np.float32)
        out[:-1] = np.moveaxis(images[:, None] + scale * unit, 1, 0)
    return out.reshape((-1, *images.shape[1:]))


def stage_targets(ctx: Context, model) -> np.ndarray:
    """The classes explained at a stage: the trained model's (`predicted`, `label`), or with
    `predicted_per_stage` (the released notebooks' choice) the stage model's own top-1 class."""
    if ctx.spec.target == "predicted_per_stage":
        return ctx.predict(model).argmax(axis=1).astype(np.int32)
    return ctx.targets


def plan_stages(spec: RunSpec, blocks: list[randomize.Block]) -> list[Stage]:
    """cascading: stage k randomizes blocks 1..k (one more block per stage), from the logits down (`top_down`, the
    paper) or from the input up (`bottom_up`: Binder et al. 2023; Hedström et al. 2023 show that top-down leaves
    the lower layers, which dominate some methods' maps, intact until the last stages); independent: stage k
    randomizes block k alone (`order` only sets the column order); efficient MPRT: one stage with every block
    (the same weights as cascading's last stage). `blocks` are listed output first."""
    test = spec.test
    stages = [Stage(0, "trained")]
    if test.all_at_once:  # eMPRT: the trained and the fully randomized model only
        return stages + [Stage(1, "all blocks", tuple(blocks))]
    ordered = blocks if spec.test_values.get("order", "top_down") == "top_down" else blocks[::-1]
    return stages + [Stage(k, block.name, (block,), restore_first=not test.cumulative)
                     for k, block in enumerate(ordered, start=1)]


def randomize_stage(spec: RunSpec, model, stage: Stage, blocks: list, trained_weights, repeat: int) -> None:
    """Re-initialise the stage's blocks in place (after restoring the trained weights, for independent stages),
    each block seeded by (seed, repeat, its index): a resumed run replays the same weights."""
    values = spec.test_values
    if stage.restore_first:
        randomize.restore(model, trained_weights)
    for block in stage.blocks:
        randomize.randomize_block(model, block, seed=seeds.derive_seed(spec.seed, repeat, blocks.index(block)),
                                  init=values["init"], init_std=values["init_std"],
                                  reset_bn_statistics=values["reset_bn_statistics"])


def model_randomization(ctx: Context) -> Iterator[Step]:
    """Paper Sec. 3.1. Randomizing a block is cheap, explaining is not: a resumed run replays the seeded
    re-initialisations of finished stages (so later stages see the same weights) but skips their maps.
    After each stage the logits on the explained images are checked to have changed."""
    spec, model, values = ctx.spec, ctx.model, ctx.spec.test_values
    blocks = spec.arch.blocks(model)
    stages = plan_stages(spec, blocks)
    trained_weights = randomize.snapshot(model)
    reference = Step(stages[0], 0, model, ctx.images, ctx.targets, wants_logits=True)
    yield reference
    try:
        for repeat in range(values["repeats"]):
            randomize.restore(model, trained_weights)
            previous = reference.logits
            for stage in tqdm(stages[1:], desc=f"stages (repeat {repeat})", disable=None):
                randomize_stage(spec, model, stage, blocks, trained_weights, repeat)
                step = Step(stage, repeat, model, ctx.images, stage_targets(ctx, model), wants_logits=True)
                yield step
                before = reference.logits if stage.restore_first else previous
                assert step.logits is not None and before is not None  # run_plan fills them in
                ctx.checks.check_stage(stage_unit(stage.index, repeat), stage.block, before, step.logits)
                previous = step.logits
    finally:
        randomize.restore(model, trained_weights)


def data_randomization(ctx: Context) -> Iterator[Step]:
    """Paper Sec. 4: the same images and target classes explained by the true-label and permuted-label models.
    Meaningful only once the permuted-label model has memorised its labels (checked)."""
    ctx.checks.check_memorised(ctx.permuted.info, ctx.spec.train.permuted_target_accuracy)
    yield Step(Stage(0, "true_labels"), 0, ctx.model, ctx.images, ctx.targets)
    permuted = ctx.permuted.model
    yield Step(Stage(1, "permuted_labels"), 0, permuted, ctx.images, stage_targets(ctx, permuted))


def input_invariance(ctx: Context) -> Iterator[Step]:
    """Kindermans et al. 2019: the same model function on inputs shifted by c (first-layer bias b - W c, logits
    checked equal); `baseline: black` moves with the shift. The verdict compares each map with its original."""
    shift = float(ctx.spec.test_values["shift"])
    low, high = (np.asarray(v, np.float32) for v in ctx.spec.arch.input_range)
    shifted = shift_compensated(ctx.model, shift)
    moved = ctx.images + np.float32(shift)
    change = check_same_function(ctx.predict(ctx.model), ctx.predict(shifted, moved), ctx.spec.model_name)
    ctx.log(f"input invariance: inputs shifted by {shift:+g}, first-layer bias compensated; logits change at most "
            f"{change:.2g}")
    yield Step(Stage(0, "original"), 0, ctx.model, ctx.images, ctx.targets)
    yield Step(Stage(1, f"shifted {shift:+g}"), 0, shifted, moved, ctx.targets, input_range=(low + shift, high + shift))


def other_classes(targets: np.ndarray, classes: int, seed: int) -> np.ndarray:
    """For each target a class drawn uniformly from the other classes (seeded): Sixt et al.'s random logit."""
    draw = seeds.rng(seed, seeds.OTHER_CLASS).integers(0, classes - 1, size=len(targets))
    return (draw + (draw >= targets)).astype(np.int32)  # skips the target itself


def random_logit(ctx: Context) -> Iterator[Step]:
    """Sixt et al. 2020: the same model and images, the explanation of another (random) class compared with the
    explanation of the class explained so far."""
    others = other_classes(ctx.targets, int(ctx.model.output_shape[-1]), ctx.spec.seed)
    yield Step(Stage(0, "explained class"), 0, ctx.model, ctx.images, ctx.targets)
    yield Step(Stage(1, "random other class"), 0, ctx.model, ctx.images, others)


PLANS = {"model_randomization": model_randomization, "data_randomization": data_randomization,
         "input_invariance": input_invariance, "random_logit": random_logit}  # by sanity_tests.SanityTest.family


def compare_all(spec: RunSpec, model, runs, images, targets, image_ids, store, checks: SelfChecks, *,
                permuted=None, keep_maps: bool = False, log=lambda line: None) -> Comparison:
    """The test's plan on these models and images, every stage compared with the reference (finished units of
    `store` skipped): the explain -> randomize -> compare part of a run; every map is also compared with the
    model-free edge maps of its input (edges.py)."""
    comparison = Comparison([run.name for run in runs], spec.metrics, image_ids, store, checks, spec.grid_images,
                            keep_maps, edges=edges.edge_maps(images))
    context = Context(spec, model, permuted, list(runs), images, targets, checks, log)
    return run_plan(context, comparison, resuming=store.resuming())


def run_plan(ctx: Context, comparison: Comparison, resuming: bool) -> Comparison:
    """Explain every step of the test's plan and compare it with the reference. A step that asks for its logits
    gets them from the passes that explain it, or, when this run resumes finished units, predicted for every step
    (logits from differently shaped calls differ by float rounding, which could hide an unchanged stage)."""
    if ctx.spec.test.family not in PLANS:
        raise SanityError(f"test {ctx.spec.test.name} has no plan for its family {ctx.spec.test.family}")
    from_passes = not resuming
    for step in PLANS[ctx.spec.test.family](ctx):
        def explain(step=step):
            maps = explain_all(ctx, step, logits=from_passes and step.wants_logits)
            if from_passes and step.wants_logits:
                maps, step.logits = maps
            return maps

        if step.stage.index == 0:
            comparison.set_reference(step.stage, explain)
        else:
            comparison.add(step.stage, step.repeat, explain)
        if step.wants_logits and step.logits is None:
            step.logits = ctx.predict(step.model, step.images)
    return comparison.finish()
