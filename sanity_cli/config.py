"""The config service, without TensorFlow: compose configs/sanity.yaml with the overrides and check every value
before any work starts (a bad value is one clear error line). Used by the CLI, sweeps and `reproduce`; every job
of a sweep is composed and validated before Hydra starts, so bad input never creates a run directory."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from . import architectures, methods, randomize, sanity_tests
from .methods.engine import OUTPUTS
from .methods.integrated_gradients import RULES
from .errors import SanityError
from .paths import config_dir
from .schema import register as register_schema

register_schema()
from . import metrics
from .report import VERDICT_RULES
from .training import TrainSettings, normalize_labels_mode

TARGETS = ("predicted", "label", "predicted_per_stage")
IMAGE_CHOICES = ("random", "first")
DATA_SOURCES = ("auto", "tfds", "idx", "bundled")
PATH_KEYS = ("data.path", "data.data_dir", "data.labels_csv", "cache_dir", "model.weights", "model.path")


@dataclass
class MethodRun:
    """One configured method: its output name (e.g. smoothgrad_gradient), registry kind and parameters."""

    name: str
    kind: str
    params: dict


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SanityError(f"{what} must be a positive integer, got {value!r}")
    return value


def _data_path(cfg: DictConfig, exists, needs: str, wrong: str) -> None:
    """Your own data (data=npz|folder): data.path is given, and `exists` holds for it."""
    if not cfg.data.get("path"):
        raise SanityError(f"data={cfg.data.name} needs {needs}")
    if not exists(Path(str(cfg.data.path)).expanduser()):
        raise SanityError(f"data.path {cfg.data.path} {wrong}")


def train_settings(cfg: DictConfig) -> TrainSettings:
    """`train.*`, with `model.train.*` (model=keras: optimizer, learning_rate, epochs, batch_size, l2,
    target_accuracy, max_epochs) taking precedence where set."""
    t = cfg.train
    own = cfg.model.get("train") or {}

    def pick(key, default):
        return own.get(key) if own.get(key) is not None else default

    try:
        settings = TrainSettings(
            epochs=int(pick("epochs", t.epochs)), batch_size=int(pick("batch_size", t.batch_size)),
            learning_rate=float(pick("learning_rate", t.learning_rate)),
            max_train_images=None if t.max_train_images is None else int(t.max_train_images),
            permuted_target_accuracy=float(pick("target_accuracy", t.permuted.target_accuracy)),
            permuted_max_epochs=int(pick("max_epochs", t.permuted.max_epochs)),
            validation_images=int(t.get("validation_images") or 0),
            validation_from=str(t.get("validation_from") or "start"),
            l2=float(pick("l2", t.get("l2") or 0.0)),
            optimizer=str(pick("optimizer", "adam")))
    except (TypeError, ValueError) as err:
        raise SanityError(f"train settings must be numbers ({err})") from None
    settings.validate()
    return settings


def method_runs(cfg: DictConfig) -> list[MethodRun]:
    """Methods selected in cfg.method, in config order, with their parameters checked."""
    runs = []
    for key, node in (cfg.get("method") or {}).items():
        params = OmegaConf.to_container(node, resolve=True) if node is not None else {}
        if not isinstance(params, dict) or "kind" not in params:
            raise SanityError(f"method '{key}' has no 'kind'; pick methods with method=[NAME,...] "
                              f"from configs/method/")
        kind = params.pop("kind")
        spec = methods.get(kind)
        for count in ("samples", "steps"):
            if count in params:
                _positive_int(params[count], f"method.{key}.{count}")
        if params.get("base_params", {}) is None:
            params["base_params"] = {}
        if "steps" in params.get("base_params", {}):
            _positive_int(params["base_params"]["steps"], f"method.{key}.base_params.steps")
        sigma = params.get("sigma", 1.0)
        if isinstance(sigma, bool) or not (isinstance(sigma, (int, float)) and sigma > 0):
            raise SanityError(f"method.{key}.sigma must be > 0, got {params['sigma']!r}")
        methods.resolve_params(key, spec, params, architectures.for_config(cfg.model).input_range)  # checks
        name = f"{kind}_{params['base']}" if key in ("smoothgrad",) else key
        if name in [run.name for run in runs]:
            raise SanityError(f"method '{key}' produces '{name}' twice; drop one of them from method=[...]")
        runs.append(MethodRun(name, kind, params))
    if not runs:
        raise SanityError("no method selected; e.g. method=[gradient,guided_backprop]")
    return runs


def verdict_metric(cfg: DictConfig) -> str:
    """The metric the verdict is decided on: the test's own (eMPRT: entropy_rise), else `verdict.metric`."""
    return sanity_tests.get(cfg.test.name).verdict_metric or cfg.verdict.metric


def metric_params(cfg: DictConfig) -> dict[str, dict]:
    """{metric: its parameters} for the configured metrics, plus the test's own verdict metric if not listed."""
    chosen = {}
    for name, node in (cfg.get("metric") or {}).items():
        params = OmegaConf.to_container(node, resolve=True) if node is not None else {}
        chosen[name] = {k: v for k, v in (params or {}).items() if v is not None}
        metrics.check_params(name, chosen[name])
    if not chosen:
        raise SanityError("no metric selected; e.g. metric=[spearman_abs,ssim]")
    own = sanity_tests.get(cfg.test.name).verdict_metric
    if own and own not in chosen:
        chosen[own] = {}
    return chosen


def validate(cfg: DictConfig) -> None:
    """Every check that needs no data or model."""
    spec = sanity_tests.get(cfg.test.name)
    _positive_int(cfg.n_images, "n_images")
    _positive_int(cfg.batch_size, "batch_size")
    _positive_int(cfg.grid_images, "grid_images")
    _positive_int(cfg.test.get("repeats", 1), "test.repeats")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise SanityError(f"seed must be a non-negative integer, got {cfg.seed!r}")
    if cfg.get("precision", "float32") not in methods.engine.PRECISIONS:
        raise SanityError(f"precision must be one of {', '.join(methods.engine.PRECISIONS)}, got "
                          f"{cfg.get('precision')!r}")
    if cfg.get("image_choice", "random") not in IMAGE_CHOICES:
        raise SanityError(f"image_choice must be one of {', '.join(IMAGE_CHOICES)}, got {cfg.image_choice!r}")
    if cfg.target not in TARGETS:
        raise SanityError(f"target must be one of {', '.join(TARGETS)}, got {cfg.target!r}")
    if cfg.verdict.get("rule") not in VERDICT_RULES:
        raise SanityError(f"verdict.rule must be one of {', '.join(VERDICT_RULES)}, got {cfg.verdict.get('rule')!r}")
    threshold = cfg.verdict.threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
        raise SanityError(f"verdict.threshold must be a number in [-1, 1], got {threshold!r}")
    judged_on = verdict_metric(cfg)
    if judged_on == cfg.verdict.metric and judged_on not in cfg.metric:
        raise SanityError(f"verdict.metric '{cfg.verdict.metric}' is not among the selected metrics "
                          f"({', '.join(cfg.metric)}); add it to metric=[...]")
    if judged_on in metrics.METRICS and not metrics.METRICS[judged_on].higher_is_more_similar \
            and cfg.verdict.rule == "threshold":
        raise SanityError(f"verdict.rule=threshold needs a similarity; {judged_on} is judged against its null: "
                          f"use verdict.rule=baseline")
    normalize_labels_mode(cfg.labels)
    train_settings(cfg)
    validate_model_and_data(cfg)
    if spec.smoothing:
        _positive_int(cfg.test.get("samples"), "test.samples")
        noise = cfg.test.get("noise_magnitude")
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
            raise SanityError(f"test.noise_magnitude must be a number >= 0, got {noise!r}")
    if spec.family == "input_invariance":
        for key, low in (("shift", None), ("tolerance", 0.0)):
            value = cfg.test.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value == 0 or (
                    low is not None and value < low):
                raise SanityError(f"test.{key} must be a {'positive ' if low is not None else 'non-zero '}number, "
                                  f"got {value!r}")
    elif spec.family == "model_randomization":
        if cfg.test.get("order", "top_down") not in randomize.ORDERS:
            raise SanityError(f"test.order must be one of {', '.join(randomize.ORDERS)}, got {cfg.test.order!r}")
        if cfg.test.init not in randomize.INITS:
            raise SanityError(f"test.init must be one of {', '.join(randomize.INITS)}, got {cfg.test.init!r}")
        if isinstance(cfg.test.init_std, bool) or not isinstance(cfg.test.init_std, (int, float)) \
                or not cfg.test.init_std > 0:
            raise SanityError(f"test.init_std must be a number > 0, got {cfg.test.init_std!r}")
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if value is not None and not isinstance(value, str):
            raise SanityError(f"{key} must be a path, got {value!r}; to name a file or folder called {value}, "
                              f"quote it: {key}=\"'{value}'\"")
    for key in ("plots", "resume"):
        if not isinstance(cfg[key], bool):
            raise SanityError(f"{key} must be true or false, got {cfg[key]!r}")
    for run in method_runs(cfg):
        for params in (run.params, run.params.get("base_params") or {}):
            if "output" in params and params["output"] not in OUTPUTS:
                raise SanityError(f"method.{run.name}.output must be one of {', '.join(OUTPUTS)}, "
                                  f"got {params['output']!r}")
            if "rule" in params and params["rule"] not in RULES:
                raise SanityError(f"method.{run.name}.rule must be one of {', '.join(RULES)}, got {params['rule']!r}")
    metric_params(cfg)


def validate_model_and_data(cfg: DictConfig) -> None:
    """The model is a known architecture that explains this data (photos go with Inception, digits with the
    MNIST models); data sources and sizes are known values."""
    arch = architectures.for_config(cfg.model)
    arch.check_data("tfds" if cfg.data.get("kind") == "tfds" and cfg.data.name not in ("mnist", "fashion_mnist")
                    else cfg.data.name)
    if arch.data == "photos":
        if cfg.data.size != arch.image_size:
            raise SanityError(f"data.size must be {arch.image_size} for model={arch.name}, got {cfg.data.size!r}")
        if cfg.data.max_images is not None:
            _positive_int(cfg.data.max_images, "data.max_images")
    elif cfg.data.get("kind") == "tfds":
        if not cfg.data.get("name"):
            raise SanityError("data=tfds needs the data set's tfds name: data.name=NAME (e.g. cifar10)")
    elif cfg.data.name == "npz":
        _data_path(cfg, Path.is_file, "the arrays file: data.path=FILE.npz (x_test, y_test[, x_train, y_train])",
                   "is not a file; give the .npz file")
    elif cfg.data.name == "folder":
        _data_path(cfg, Path.is_dir, "the images' folder: data.path=DIR (one subfolder per class, or flat)",
                   "is not a directory; point it at a folder of images")
        if cfg.data.size is not None:
            _positive_int(cfg.data.size, "data.size")
    elif cfg.data.source not in DATA_SOURCES:
        raise SanityError(f"data.source must be one of {', '.join(DATA_SOURCES)}, got {cfg.data.source!r}")


# ---------------------------------------------------------------- composing

NOT_GROUPS = ("suites", "hydra")  # folders of configs/ that are not `sanity run` config groups
HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                          "--config-dir", "-cd", "--experimental-rerun"}
MAX_PRECHECKED_JOBS = 256


def group_choices() -> dict[str, list[str]]:
    root = config_dir()
    return {group.name: sorted(p.stem for p in group.glob("*.yaml"))
            for group in sorted(root.iterdir())
            if group.is_dir() and group.name not in NOT_GROUPS and any(group.glob("*.yaml"))}


def split_args(args: list[str]) -> tuple[list[str], bool]:
    """(overrides, multirun) from the arguments Hydra will see."""
    overrides, multirun, skip = [], False, False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-m", "--multirun"):
            multirun = True
        elif arg in HYDRA_FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, multirun


def expand_sweeps(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Every job's override list (one job without -m)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not multirun:
        return [overrides]
    parsed = OverridesParser.create().parse_overrides(overrides)
    options = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            options.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            options.append([override.input_line])
    return [list(job) for job in itertools.islice(itertools.product(*options), MAX_PRECHECKED_JOBS)]


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def composition_message(err: Exception) -> str:
    """Hydra's composition error as one line; an unknown choice of a sanity group lists the valid ones; a value of
    the wrong type (sanity_cli/schema.py) names its key."""
    import re

    from omegaconf.errors import ValidationError

    cause = err
    while cause is not None and not isinstance(cause, ValidationError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None and getattr(cause, "full_key", None):
        return f"{cause.full_key}: {str(cause.msg).splitlines()[0]}"

    unknown = re.search(r"Could not (?:load|find) '([\w]+)/([^']+)'", str(err))
    choices = group_choices()
    if unknown and unknown.group(1) in choices:
        group, name = unknown.groups()
        example = f"'{group}=[{choices[group][0]},...]'" if group in ("method", "metric") else f"{group}=NAME"
        return f"unknown {group} '{name}'; choose from {', '.join(choices[group])} ({example})"
    hint = ("; install the launcher with pip install 'sanity-cli[parallel]' (hydra/launcher=parallel) or "
            "'sanity-cli[slurm]' (hydra/launcher=slurm)") if "hydra/launcher" in str(err) else ""
    return f"{one_line(err)}{hint} (see 'sanity --help' for the config groups)"


@dataclass(frozen=True)
class ConfigSource:
    """Where a run's configs come from, as Hydra's flags say: `--config-path` (the primary config's folder, default
    sanity's configs/), `--config-name` (default `sanity`) and `--config-dir` (one more folder on the search path).
    `hydra.searchpath` (in an override or the primary config) is honoured by Hydra's config loader itself."""

    path: Path | None = None
    name: str = "sanity"
    extra_dir: Path | None = None

    def hydra_main_args(self) -> tuple[str, str, list[str]]:
        """(config_path, config_name, extra argv) for hydra.main, so Hydra composes what precheck composed."""
        extra = ["--config-dir", str(self.extra_dir)] if self.extra_dir else []
        return str(self.path or config_dir()), self.name, extra

    def flags(self) -> list[str]:
        """The command-line flags that name this source (for `reproduce`'s job processes)."""
        flags = ["--config-path", str(self.path)] if self.path else []
        flags += ["--config-name", self.name] if self.name != "sanity" else []
        return flags + (["--config-dir", str(self.extra_dir)] if self.extra_dir else [])

    def folders(self) -> list[Path]:
        """Config folders in lookup order (for files that are not Hydra configs, such as suites)."""
        return [folder for folder in (self.extra_dir, self.path) if folder is not None] + [config_dir()]

    def compose(self, overrides: list[str], multirun: bool = False) -> DictConfig:
        """The job's config with its `hydra` node, composed as hydra.main will: the same search path (the same
        plugins, --config-dir placed where Hydra places it), the same task name, every hydra.* override."""
        from hydra._internal.hydra import Hydra  # the public compose API has no --config-dir
        from hydra._internal.utils import create_config_search_path
        from hydra.core.config_search_path import SearchPathQuery
        from hydra.core.global_hydra import GlobalHydra
        from hydra.types import RunMode

        search_path = create_config_search_path(str(self.path or config_dir()))
        if self.extra_dir is not None:
            search_path.prepend(provider="command-line", path=f"file://{self.extra_dir}",
                                anchor=SearchPathQuery(provider="schema"))
        GlobalHydra.instance().clear()
        try:
            hydra = Hydra.create_main_hydra2(task_name=TASK_NAME, config_search_path=search_path)
            return hydra.compose_config(self.name, overrides, run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN,
                                        with_log_configuration=False)
        finally:
            GlobalHydra.instance().clear()


TASK_NAME = "cli"  # Hydra's job name for `sanity` (the module declaring hydra.main): cli.log, ${hydra.job.name}
CONFIG_FLAGS = {"--config-path": "path", "-cp": "path", "--config-name": "name", "-cn": "name",
                "--config-dir": "extra_dir", "-cd": "extra_dir"}


def config_source(args: list[str]) -> tuple[ConfigSource, list[str]]:
    """The ConfigSource named by Hydra's config flags in args (FLAG VALUE or FLAG=VALUE), and the other args.
    Folders are relative to the current directory (Hydra's --config-path is relative to the calling module)."""
    found, rest, i = {}, [], 0
    while i < len(args):
        flag, _, value = args[i].partition("=")
        if flag in CONFIG_FLAGS:
            if not value:
                if i + 1 >= len(args):
                    raise SanityError(f"{flag} needs a value, e.g. {flag} my_configs")
                value, i = args[i + 1], i + 1
            found[CONFIG_FLAGS[flag]] = value
        else:
            rest.append(args[i])
        i += 1
    for key in ("path", "extra_dir"):
        if key in found:
            folder = Path(found[key]).expanduser().absolute()
            if not folder.is_dir():
                flag = "--config-path" if key == "path" else "--config-dir"
                raise SanityError(f"{flag} {found[key]}: no such folder; name a folder of YAML configs")
            found[key] = folder
    if "name" in found:
        found["name"] = found["name"].removesuffix(".yaml")
    return ConfigSource(**found), rest


def yaml_error(err: BaseException) -> str | None:
    """A YAML syntax error anywhere in err's chain as 'FILE:LINE: problem', else None."""
    import yaml

    while err is not None:
        if isinstance(err, yaml.MarkedYAMLError):
            mark = err.problem_mark or err.context_mark
            where = f"{mark.name}:{mark.line + 1}" if mark is not None else "a config file"
            opened = err.context_mark
            context = f" ({err.context} started on line {opened.line + 1})" if err.context and opened else ""
            return f"{where}: YAML syntax error: {err.problem}{context}; fix the file"
        err = err.__cause__ or err.__context__
    return None


@dataclass
class Job:
    """One composed and validated job: its config (what the pipeline sees), the whole composition with its
    `hydra` node (what Hydra runs), and where Hydra will write: the run and sweep directories resolved once (so
    `${now:...}` is the same instant for the checks and for Hydra), `~` expanded, absolute with `..` and links
    resolved. `timestamped`: the run directory's pattern is made new by the clock."""

    cfg: DictConfig
    full: DictConfig
    run_dir: Path
    sweep_dir: Path
    timestamped: bool


def output_dir(hydra: DictConfig, kind: str) -> Path:
    return Path(str(OmegaConf.select(hydra, f"{kind}.dir"))).expanduser().resolve()


def compose_jobs(overrides: list[str], multirun: bool, source: ConfigSource = ConfigSource(),
                 check: bool = True, limit: int = MAX_PRECHECKED_JOBS) -> list[Job]:
    """Compose (and, with check, validate) every job before Hydra starts, so bad input never creates a run
    directory. Each job's `hydra` node is composed too: its run and sweep directories are what Hydra will use."""
    for override in overrides:
        if "=" not in override and not override.startswith("~"):
            raise SanityError(f"'{override}' is not an override KEY=VALUE; a value with spaces must be quoted, "
                              f"e.g. 'hydra.run.dir=\"my results/run\"'")
    jobs = []
    try:
        for job_overrides in expand_sweeps(overrides, multirun)[:limit]:
            full = source.compose(job_overrides, multirun)
            hydra = full.hydra
            cfg = OmegaConf.masked_copy(full, [k for k in full if k != "hydra"])
            OmegaConf.resolve(cfg)
            if check:
                validate(cfg)
            pattern = str(OmegaConf.to_container(hydra.run, resolve=False)["dir"])
            jobs.append(Job(cfg, full, output_dir(hydra, "run"), output_dir(hydra, "sweep"), "${now:" in pattern))
    except SanityError:
        raise
    except Exception as err:  # Hydra / OmegaConf / YAML composition errors
        raise SanityError(yaml_error(err) or composition_message(err)) from None
    return jobs
