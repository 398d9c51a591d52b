"""The config service, without TensorFlow: compose configs/sanity.yaml with the overrides as Hydra will, and parse
each job into its RunSpec (sanity_cli/spec.py: the one check of every value) before any work starts (a bad value
is one clear error line). Used by the CLI, sweeps and `reproduce`; every job of a sweep is composed and parsed
before Hydra starts, so bad input never creates a run directory."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .errors import SanityError, one_line
from .paths import config_dir
from .schema import register as register_schema
from .spec import parse

register_schema()

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


PATH_KEYS = ("data.path", "data.data_dir", "data.labels_csv", "cache_dir", "model.path", "model.weights",
             "hydra.run.dir", "hydra.sweep.dir")
LIST_GROUPS = ("method", "metric")


def _quoted(value: str) -> str:
    """A Hydra quoted string that reads back as exactly `value`."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def prepare_overrides(overrides: list[str]) -> list[str]:
    """The overrides as Hydra will read them, checked: a path with characters Hydra's grammar does not take
    unquoted (`~`, `=`, non-ASCII letters, ...) is quoted for it; any other value it cannot read is one line saying
    how to quote it; an empty or repeated method/metric list is one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, prepared = OverridesParser.create(), []
    for override in overrides:
        if "=" not in override and not override.startswith("~"):
            raise SanityError(f"'{override}' is not an override KEY=VALUE; a value with spaces must be quoted, "
                              f"e.g. 'hydra.run.dir=\"my results/run\"'")
        key, _, value = override.partition("=")
        try:
            parsed = parser.parse_override(override)
        except Exception:  # Hydra's grammar errors (HydraException, OverrideParseException)
            if key.lstrip("+~") not in PATH_KEYS or not value:
                raise SanityError(f"'{override}': Hydra cannot read this value; quote it, e.g. "
                                  f"'{key}=\"{value}\"' (and the whole argument for the shell)") from None
            override = f"{key}={_quoted(value)}"
            parsed = parser.parse_override(override)
        prepared.append(override)
        group = parsed.get_key_element().lstrip("+~")
        if group in LIST_GROUPS and isinstance(parsed.value(), list):
            names = [str(v) for v in parsed.value()]
            if not names:
                example = "method=[gradient,guided_backprop]" if group == "method" else "metric=[spearman_abs,ssim]"
                raise SanityError(f"{group}=[] selects no {group}; name at least one, e.g. {example}")
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise SanityError(f"{group}=[{','.join(names)}] names {', '.join(twice)} twice; list each {group} "
                                  f"once")
    return prepared


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
    """One composed and validated job: its config (what spec.parse reads), the whole composition with its
    `hydra` node (what Hydra runs), and where Hydra will write: the run and sweep directories resolved once (so
    `${now:...}` is the same instant for the checks and for Hydra), `~` expanded, absolute with `..` and links
    resolved. `timestamped`: the run directory's pattern is made new by the clock."""

    cfg: DictConfig
    full: DictConfig
    run_dir: Path
    sweep_dir: Path
    timestamped: bool
    spec: object = None   # the parsed RunSpec (compose_jobs with check)


def output_dir(hydra: DictConfig, kind: str) -> Path:
    return Path(str(OmegaConf.select(hydra, f"{kind}.dir"))).expanduser().resolve()


def compose_jobs(overrides: list[str], multirun: bool, source: ConfigSource = ConfigSource(),
                 check: bool = True, limit: int = MAX_PRECHECKED_JOBS) -> list[Job]:
    """Compose (and, with check, validate) every job before Hydra starts, so bad input never creates a run
    directory. Each job's `hydra` node is composed too: its run and sweep directories are what Hydra will use."""
    jobs = []
    overrides = prepare_overrides(overrides)
    try:
        for job_overrides in expand_sweeps(overrides, multirun)[:limit]:
            full = source.compose(job_overrides, multirun)
            hydra = full.hydra
            cfg = OmegaConf.masked_copy(full, [k for k in full if k != "hydra"])
            OmegaConf.resolve(cfg)
            spec = parse(cfg) if check else None
            pattern = str(OmegaConf.to_container(hydra.run, resolve=False)["dir"])
            jobs.append(Job(cfg, full, output_dir(hydra, "run"), output_dir(hydra, "sweep"), "${now:" in pattern,
                            spec))
    except SanityError:
        raise
    except Exception as err:  # Hydra / OmegaConf / YAML composition errors
        raise SanityError(yaml_error(err) or composition_message(err)) from None
    return jobs
