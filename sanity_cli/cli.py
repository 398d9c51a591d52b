"""`sanity` command line: `sanity run|train [hydra overrides]`.

Hydra does the composing, sweeping (-m) and run directories; this front end adds the commands, a help
page listing the config groups, and turns every bad input into one error line with exit code 2
(130 on Ctrl-C). `--debug` shows the full traceback instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import NoReturn

from .config import config_dir, group_choices, one_line, precheck, split_args
from .errors import SanityError

COMMANDS = {
    "run": "run a sanity check (model or data randomization) and write tables, grids and plots",
    "train": "train (or load from the cache) one model: labels=true|permuted",
    "reproduce": "re-run a named suite unattended (cron); exit 1 when a verdict changed: reproduce SUITE "
                 "[--results DIR] [overrides]",
}
def help_text() -> str:
    lines = ["usage: sanity COMMAND [hydra overrides] [-m] [--cfg job] [--debug]", "",
             "Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018).", "", "commands:"]
    lines += [f"  {name:8s} {text}" for name, text in COMMANDS.items()]
    lines += ["", "config groups (pick one with GROUP=CHOICE; method and metric take lists: 'method=[a,b]'):"]
    lines += [f"  {group:12s} {', '.join(choices)}" for group, choices in group_choices().items()]
    lines += ["", "suites for 'sanity reproduce SUITE' (configs/suites/):",
              f"  {', '.join(sorted(p.stem for p in (config_dir() / 'suites').glob('*.yaml')))}",
              "", "sweep launchers: hydra/launcher=parallel (local processes), hydra/launcher=slurm (clusters)"]
    lines += ["", "examples:",
              "  sanity run                                   # MNIST CNN, cascading, smoke budget",
              "  sanity run model=mnist_cnn data=fashion_mnist test=cascading budget=smoke",
              "  sanity run test=data 'method=[gradient,guided_backprop]'",
              "  sanity run -m model=mnist_cnn,mnist_mlp test=cascading,independent",
              "  sanity train model=mnist_mlp labels=permuted",
              "  sanity run resume=true                       # continue the killed run of this config",
              "  sanity reproduce paper_mnist                 # for cron: exit 1 when a verdict changed",
              "  sanity run --cfg job                         # print the composed config",
              "", f"configs: {config_dir()}"]
    return "\n".join(lines)


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"sanity: error: {message}", file=sys.stderr)
    sys.exit(code)


def explicit_run_dir(overrides: list[str]) -> Path | None:
    key = "hydra.run.dir="
    explicit = [o[len(key):] for o in overrides if o.startswith(key)]
    return Path(explicit[-1]) if explicit and "${" not in explicit[-1] else None


def find_resumable(cfg, results: Path) -> Path | None:
    """The newest unfinished run directory under `results` started by this same config."""
    from .units import UNITS_DIR, RUN_FILE, config_fingerprint, finished, saved_fingerprint

    fingerprint = config_fingerprint(cfg)
    candidates = [p.parent.parent for p in results.rglob(f"{UNITS_DIR}/{RUN_FILE}")] if results.is_dir() else []
    candidates = [d for d in candidates
                  if saved_fingerprint(d) == fingerprint and not finished(d)]
    return max(candidates, key=lambda d: (d / UNITS_DIR / RUN_FILE).stat().st_mtime, default=None)


def resume_overrides(cfg, args: list[str], overrides: list[str]) -> list[str] | None:
    """`resume=true`: point Hydra at the run to continue. Returns the new args, or None when the named run
    is already finished (its verdict is printed again)."""
    run_dir = explicit_run_dir(overrides)
    if run_dir is None:
        found = find_resumable(cfg, Path.cwd() / "results")
        if found is None:
            print("resume: no unfinished run of this config under ./results; starting a new one", file=sys.stderr)
            return args
        print(f"resume: continuing {found}", file=sys.stderr)
        return args + [f"hydra.run.dir={found}"]
    from .units import finished

    if not finished(run_dir):
        return args  # unfinished or new: the pipeline resumes its units
    from .pipeline import report_finished

    report_finished(run_dir, cfg)
    return None


def check_output_dir(overrides: list[str], multirun: bool) -> None:
    """The run (or sweep) directory, or ./results by default, must be creatable before Hydra starts."""
    from .units import finished

    key = "hydra.sweep.dir=" if multirun else "hydra.run.dir="
    explicit = [o[len(key):] for o in overrides if o.startswith(key)]
    target = Path(explicit[-1]) if explicit and "${" not in explicit[-1] else Path.cwd() / "results"
    if explicit and not multirun and finished(target):
        raise SanityError(f"{target} already holds a finished run; pick a new hydra.run.dir")
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".sanity-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise SanityError(f"cannot write results to {target} ({err.strerror}); run from a writable directory "
                          f"or pass {key}DIR") from None


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("sanity: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if debug:
        os.environ["SANITY_DEBUG"] = "1"
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(help_text())
        return 0
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        fail(f"unknown command '{command}'; choose from {', '.join(COMMANDS)} (see 'sanity --help')")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HYDRA_FULL_ERROR", "1" if debug else "0")
    if command == "reproduce":
        return _reproduce(args, debug)
    informational = any(a in ("--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc", "--cfg",
                              "-c") for a in args)
    if not informational:
        try:
            overrides, multirun = split_args(args)
            configs = precheck(overrides, multirun)
            if command == "run" and not multirun:
                if configs[0].resume:
                    args = resume_overrides(configs[0], args, overrides)
                    if args is None:
                        return 0
                    overrides, _ = split_args(args)
                run_dir = explicit_run_dir(overrides)
                if run_dir is not None:  # before Hydra writes its .hydra/ copy into it
                    from .units import check_claim, config_fingerprint

                    check_claim(run_dir, config_fingerprint(configs[0]))
            check_output_dir(overrides, multirun)
        except SanityError as err:
            if debug:
                raise
            fail(str(err))
        import_tensorflow_quietly(debug)  # only now that the run is known to be valid
    return _hydra_main(command, args + train_dir_overrides(command, args), debug)


def train_dir_overrides(command: str, args: list[str]) -> list[str]:
    """`sanity train` directories end in _train: configs/sanity.yaml's run and sweep directory patterns end in
    the randomization test's name, which a training has not."""
    if command != "train":
        return []
    from omegaconf import OmegaConf

    hydra = OmegaConf.to_container(OmegaConf.load(config_dir() / "sanity.yaml").hydra, resolve=False)
    extra = []
    for key, pattern in (("hydra.run.dir", hydra["run"]["dir"]), ("hydra.sweep.subdir", hydra["sweep"]["subdir"])):
        if not any(a.startswith(f"{key}=") for a in args):
            extra.append(f"{key}={pattern.replace('${hydra.runtime.choices.test}', 'train')}")
    return extra


def _reproduce(args: list[str], debug: bool) -> int:
    from .reproduce import reproduce

    results, rest, i = Path("results"), [], 0
    while i < len(args):
        if args[i] == "--results" and i + 1 < len(args):
            results, i = Path(args[i + 1]), i + 2
        elif args[i].startswith("--results="):
            results, i = Path(args[i].split("=", 1)[1]), i + 1
        else:
            rest.append(args[i])
            i += 1
    if not rest or "=" in rest[0] or rest[0].startswith("-"):
        fail("usage: sanity reproduce SUITE [--results DIR] [overrides]; SUITE is a name from configs/suites/ "
             "or a YAML file (see 'sanity --help')")
    try:
        return reproduce(rest[0], rest[1:], results.expanduser())  # each job is its own `sanity run` process
    except SanityError as err:
        if debug:
            raise
        fail(str(err))


@contextlib.contextmanager
def quiet_stderr(enabled: bool = True):
    """Silence file descriptor 2 (TensorFlow's C++ start-up chatter about oneDNN and CUDA) for a moment."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly(debug: bool) -> None:
    with quiet_stderr(not debug):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")


def _hydra_main(command: str, args: list[str], debug: bool) -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import ConfigCompositionException

    def task(cfg) -> None:
        from hydra.types import RunMode

        from . import pipeline, sweep

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
        try:
            if in_sweep:
                sweep.clear_failure(run_dir)
            getattr(pipeline, command)(cfg, run_dir)
        except SanityError as err:
            if debug:
                raise
            if not in_sweep:
                fail(str(err))
            # one bad job (e.g. a data set missing offline) must not stop the rest of a sweep
            print(f"sanity: error: job {run_dir.name}: {err}", file=sys.stderr)
            sweep.record_failure(run_dir, str(err))
        except KeyboardInterrupt:
            print(f"sanity: interrupted; finished results in {run_dir} are kept, nothing half-written",
                  file=sys.stderr)
            sys.exit(130)

    sys.argv = [f"sanity {command}"] + args
    entry = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="sanity")(task)
    try:
        entry()
    except (ValueError, ConfigCompositionException) as err:  # Hydra's own usage errors, e.g. -m with --cfg
        if debug:
            raise
        fail(f"{one_line(err)} (see 'sanity --help')")
    from . import sweep

    return 2 if sweep.FAILED_JOBS else 0


if __name__ == "__main__":
    sys.exit(main())
