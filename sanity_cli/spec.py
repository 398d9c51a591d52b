"""The run spec: the composed config (or check()'s keywords, composed the same way) parsed once into frozen,
typed values. This is the only validation: each registry entry (architecture, data source, test, method, metric)
declares its parameters (sanity_cli/params.py) and `parse` checks them generically, with one line naming the fix
for the first problem; what needs the data or the model (a path's contents, an image size) is checked by the
core as soon as those are loaded. TensorFlow-free.

    spec = parse(cfg)        # cfg: the composed config without its `hydra` node
    result = core.run_check(spec, store=...)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from . import architectures, datasources, methods, metrics, sanity_tests
from .errors import SanityError
from .report import ALL_METRICS
from .methods.options import PRECISIONS, EngineOptions
from .params import Choice, Flag, Int, Number, Param, PathValue, check
from .training import TrainSettings, normalize_labels_mode

TARGETS = ("predicted", "label", "predicted_per_stage")
IMAGE_CHOICES = ("random", "first")
VERDICT_RULES = ("baseline", "threshold")

TOP = {  # the top-level keys of configs/sanity.yaml (their types are checked while composing: schema.py)
    "seed": Int(0, low=0),
    "n_images": Int(low=1),
    "image_choice": Choice("random", IMAGE_CHOICES),
    "batch_size": Int(256, low=1),
    "grid_images": Int(3, low=1),
    "jit_compile": Flag(False),
    "precision": Choice("float32", PRECISIONS),
    "target": Choice("predicted", TARGETS),
    "plots": Flag(True),
    "resume": Flag(False),
    "cache_dir": PathValue(),
}
VERDICT = {"metric": Param("all", lambda v: isinstance(v, str), "a metric name or all"),
           "rule": Choice("baseline", VERDICT_RULES),
           "threshold": Number(0.5, low=-1, high=1)}
VERDICT["threshold"] = Param(0.5, VERDICT["threshold"].test, "a number in [-1, 1]", float)


@dataclass(frozen=True)
class MethodRun:
    """One configured method: its output name (e.g. smoothgrad_gradient), registry kind and checked parameters
    (defaults filled in; the Grad-CAM family's layer filled from the model when the run starts)."""

    name: str
    kind: str
    params: Mapping[str, Any]

    @property
    def method(self) -> methods.MethodSpec:
        return methods.get(self.kind)


@dataclass(frozen=True)
class VerdictSpec:
    metric: str           # the metric the verdict is decided on (the test's own, e.g. eMPRT's entropy_rise)
    rule: str
    threshold: float


@dataclass(frozen=True)
class RunSpec:
    """Everything a run needs, checked: what to explain (data, model), how (methods, engine options), which test,
    how to compare (metrics) and judge (verdict), and where the trained models live (cache_dir)."""

    arch: architectures.Architecture
    data: datasources.DataSource
    data_values: Mapping[str, Any]
    test: sanity_tests.SanityTest
    test_values: Mapping[str, Any]
    methods: tuple[MethodRun, ...]
    metrics: Mapping[str, Mapping[str, Any]]   # metric -> its checked parameters, the verdict's metric included
    verdict: VerdictSpec
    train: TrainSettings
    engine: EngineOptions
    seed: int
    n_images: int
    image_choice: str
    target: str
    labels: str
    grid_images: int
    plots: bool
    resume: bool
    cache_dir: str | None
    config: Mapping[str, Any] = field(default_factory=dict, compare=False)  # the resolved config (manifest)

    @property
    def model_name(self) -> str:
        return self.arch.name

    @property
    def data_name(self) -> str:
        return self.data.data_name(self.data_values)

    @property
    def trains_copies(self) -> bool:
        """The test trains models of the architecture (the data test: true- and permuted-label copies)."""
        return self.test.family == "data_randomization"

    @property
    def verdict_metrics(self) -> list[str]:
        """The metrics the verdict is decided on: the one named, or (verdict.metric=all) every selected similarity."""
        if self.verdict.metric != ALL_METRICS:
            return [self.verdict.metric]
        return [m for m in self.metrics if metrics.get(m).higher_is_more_similar]

    def heading(self) -> str:
        combined = self.verdict_metrics if self.verdict.metric == ALL_METRICS else None
        return self.test.heading(self.verdict.metric, self.verdict.rule, self.verdict.threshold, self.test_values,
                                 combined)


def _container(node) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def parse(cfg: DictConfig | Mapping, *, model=None, dataset=None) -> RunSpec:
    """The RunSpec of a composed config; the first problem is one SanityError line naming the fix. check() gives
    its live Keras `model` (model=keras without a file: architectures.LiveModel) and its `dataset` (data=npz
    without a file)."""
    config = _container(cfg)
    top = check("", TOP, {k: config.get(k) for k in TOP}, owner="the config")
    test = sanity_tests.get(config["test"]["name"])
    test_values = check("test", test.params, config["test"], owner=f"test {test.name}", ignore=("name",))
    labels = normalize_labels_mode(config.get("labels", True))
    model_node = config["model"]
    arch_params = dict(architectures.declared(model_node["name"]))
    if model is not None:
        arch_params["path"] = PathValue()
    model_values = check("model", arch_params, model_node, owner=f"model {model_node['name']}", ignore=("name",))
    arch = (architectures.LiveModel.of(model, model_values) if model is not None
            else architectures.from_values(model_node["name"], model_values))
    train = train_settings(config["train"], model_values.get("train") or {}, arch)
    data = datasources.get(datasources.key_of(config["data"]))
    data_params = dict(data.params, **({"path": PathValue()} if dataset is not None else {}))
    data_values = check("data", data_params, config["data"], owner=f"data {data.name}",
                        ignore=("kind",) if data.name == "tfds" else ("name", "kind"))
    arch.check_data(data.data_name(data_values), data_values)
    if data.check is not None and dataset is None:
        data.check(data_values)
    runs = method_runs(config.get("method"), arch.input_range)
    verdict = check("verdict", VERDICT, config.get("verdict"), owner="verdict")
    chosen = metric_params(config.get("metric"), test)
    judged_on = test.verdict_metric or verdict["metric"]
    if judged_on == ALL_METRICS and not [m for m in chosen if metrics.get(m).higher_is_more_similar]:
        raise SanityError(f"verdict.metric=all judges by the selected similarities, and {', '.join(chosen)} holds "
                          f"none; add one to metric=[...] (e.g. spearman_abs)")
    if judged_on == ALL_METRICS and test.family == "input_invariance":  # decided by the maps' change, not a metric
        judged_on = next(m for m in chosen if metrics.get(m).higher_is_more_similar)
    if judged_on == verdict["metric"] and judged_on != ALL_METRICS and judged_on not in chosen:
        raise SanityError(f"verdict.metric '{verdict['metric']}' is not among the selected metrics "
                          f"({', '.join(chosen)}); add it to metric=[...]")
    if judged_on != ALL_METRICS and not metrics.get(judged_on).higher_is_more_similar \
            and verdict["rule"] == "threshold":
        raise SanityError(f"verdict.rule=threshold needs a similarity; {judged_on} is judged against its null: "
                          f"use verdict.rule=baseline")
    return RunSpec(arch=arch, data=data, data_values=data_values, test=test, test_values=test_values,
                   methods=runs, metrics=chosen, verdict=VerdictSpec(judged_on, verdict["rule"], verdict["threshold"]),
                   train=train, engine=EngineOptions(top["jit_compile"], top["precision"], top["batch_size"]),
                   seed=top["seed"], n_images=top["n_images"], image_choice=top["image_choice"],
                   target=top["target"], labels=labels, grid_images=top["grid_images"], plots=top["plots"],
                   resume=top["resume"], cache_dir=top["cache_dir"], config=config)


def train_settings(train: Mapping, own: Mapping, arch) -> TrainSettings:
    """`train.*`, with the model's own `model.train.*` (model=keras: optimizer, learning_rate, epochs,
    batch_size, l2, target_accuracy, max_epochs) taking precedence where set; train.l2 null is the
    architecture's released penalty (mnist_cnn: the released --reg)."""
    permuted = train.get("permuted") or {}

    def pick(key, default):
        return own.get(key) if own.get(key) is not None else default

    l2 = pick("l2", train.get("l2"))
    try:
        settings = TrainSettings(
            epochs=int(pick("epochs", train["epochs"])), batch_size=int(pick("batch_size", train["batch_size"])),
            learning_rate=float(pick("learning_rate", train["learning_rate"])),
            max_train_images=None if train.get("max_train_images") is None else int(train["max_train_images"]),
            permuted_target_accuracy=float(pick("target_accuracy", permuted["target_accuracy"])),
            permuted_max_epochs=int(pick("max_epochs", permuted["max_epochs"])),
            validation_images=int(train.get("validation_images") or 0),
            validation_from=str(train.get("validation_from") or "start"),
            l2=float(arch.released_l2 if l2 is None else l2),
            optimizer=str(pick("optimizer", "adam")))
    except (TypeError, ValueError, KeyError) as err:
        raise SanityError(f"train settings must be numbers ({err})") from None
    settings.validate()
    return settings


def method_runs(node: Mapping | None, input_range) -> tuple[MethodRun, ...]:
    """The methods selected in `method`, in config order, their parameters checked (the registry's declarations,
    a noise tunnel's base and its parameters too), defaults filled in."""
    runs: list[MethodRun] = []
    for key, params in (node or {}).items():
        if not isinstance(params, Mapping) or "kind" not in params:
            raise SanityError(f"method '{key}' has no 'kind'; pick methods with method=[NAME,...] "
                              f"from configs/method/")
        params = dict(params)
        kind = params.pop("kind")
        spec = methods.get(kind)
        checked = methods.check_params(key, spec, params)
        resolved = methods.resolve_params(key, spec, checked, input_range)  # the base method, its parameters
        if spec.recipe is not None:
            spec.recipe(**resolved)  # what only the recipe can tell (the trapezoid rule needs 2 steps)
        name = f"{kind}_{checked['base']}" if key in ("smoothgrad",) else key
        if name in [run.name for run in runs]:
            raise SanityError(f"method '{key}' produces '{name}' twice; drop one of them from method=[...]")
        runs.append(MethodRun(name, kind, checked))
    if not runs:
        raise SanityError("no method selected; e.g. method=[gradient,guided_backprop]")
    return tuple(runs)


def metric_params(node: Mapping | None, test: sanity_tests.SanityTest) -> dict[str, dict]:
    """{metric: its checked parameters} for the configured metrics, plus the test's own verdict metric."""
    chosen = {name: metrics.check_params(name, params) for name, params in (node or {}).items()}
    if not chosen:
        raise SanityError("no metric selected; e.g. metric=[spearman_abs,ssim]")
    if test.verdict_metric and test.verdict_metric not in chosen:
        chosen[test.verdict_metric] = metrics.check_params(test.verdict_metric, {})
    return chosen
