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

from .config import Job, compose_jobs, config_source, group_choices, output_dir, prepare_overrides, split_args
from .paths import config_dir
from .rundir import RunDir, RunDirRefused, config_fingerprint, hydra_quoted, new_directories, omegaconf_literal
from .errors import SanityError, one_line

COMMANDS = {
    "run": "run a sanity check (model or data randomization) and write tables, grids and plots",
    "train": "train (or load from the cache) one model: labels=true|permuted",
    "reproduce": "re-run a named suite unattended (cron); exit 1 when a verdict changed: reproduce SUITE "
                 "[--results DIR] [overrides]",
    "report": "(re)build report.html of a finished run, sweep or reproduce run: report DIR [DIR ...]",
}
def help_text() -> str:
    lines = ["usage: sanity COMMAND [hydra overrides] [-m] [--cfg job] [--debug]", "",
             "Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018).", "", "commands:"]
    lines += [f"  {name:8s} {text}" for name, text in COMMANDS.items()]
    lines += ["", "config groups (pick one with GROUP=CHOICE; method and metric take lists: 'method=[a,b]'):"]
    lines += [f"  {group:12s} {', '.join(choices)}" for group, choices in group_choices().items()]
    lines += ["", "suites for 'sanity reproduce SUITE' (configs/suites/):",
              f"  {', '.join(sorted(p.stem for p in (config_dir() / 'suites').glob('*.yaml')))}",
              "", "sweep launchers: hydra/launcher=parallel (local processes), hydra/launcher=slurm (clusters), "
              "hydra/launcher=ray (Ray clusters)"]
    lines += ["", "examples:",
              "  sanity run                                   # MNIST CNN, cascading, smoke budget",
              "  sanity run model=mnist_cnn data=fashion_mnist test=cascading budget=smoke",
              "  sanity run test=data 'method=[gradient,guided_backprop]'",
              "  sanity run model=keras model.path=my.keras data=npz data.path=my.npz   # your own model and data",
              "  sanity run test=efficient_mprt                # after the paper: bottom-up, sMPRT, eMPRT, ...",
              "  sanity run -m model=mnist_cnn,mnist_mlp test=cascading,independent",
              "  sanity train model=mnist_mlp labels=permuted",
              "  sanity run resume=true                       # continue the killed run of this config",
              "  sanity reproduce paper_mnist                 # for cron: exit 1 when a verdict changed",
              "  sanity report results/2026-11-25/10-00-00_mnist_cnn_mnist_cascading   # rebuild report.html",
              "  sanity run --cfg job                         # print the composed config",
              "", f"configs: {config_dir()}"]
    return "\n".join(lines)


def invocation(command: str) -> list[str]:
    """The `sanity` command that reproduces this job: the config folders it was composed from (--config-path,
    --config-name, --config-dir, hydra.searchpath) and its overrides as Hydra recorded them (a sweep job's own
    values; not its run directory: a reproduction writes a new one), or the process's argv outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra = HydraConfig.get()
    except ValueError:  # not running under Hydra
        return list(sys.argv)
    flags = []
    for source in hydra.runtime.config_sources:
        folder = str(source.path).removeprefix("file://")
        if source.provider == "main" and Path(folder).resolve() != config_dir():
            flags += ["--config-path", folder]
        elif source.provider == "command-line":
            flags += ["--config-dir", folder]
    if hydra.job.config_name not in (None, "sanity"):
        flags += ["--config-name", hydra.job.config_name]
    searchpath = [o for o in hydra.overrides.hydra if o.startswith("hydra.searchpath=")]
    return ["sanity", command, *flags, *searchpath, *hydra.overrides.task]



def fail(message: str, code: int = 2) -> NoReturn:
    print(f"sanity: error: {message}", file=sys.stderr)
    sys.exit(code)


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
    if command == "report":
        return _report(args, debug)
    informational = any(a.split("=")[0] in INFO_FLAGS for a in args)
    created: list[Path] = []
    try:
        source, args = config_source(args)
        overrides, multirun = split_args(args)
        readable = dict(zip(overrides, prepare_overrides(overrides)))  # what Hydra can read (quoted paths)
        args = [readable.get(arg, arg) for arg in args]
        overrides = [readable[o] for o in overrides]
        if informational:  # compose only, so a broken config is one line, not Hydra's traceback
            compose_jobs(overrides, multirun, source, check=False, limit=1)
        else:
            jobs = compose_jobs(overrides, multirun, source)
            if command == "train":
                args = args + train_directories(jobs[0])
            if multirun:
                sweep_dir = RunDir(jobs[0].sweep_dir)
                finished = [p.name for p in sorted(sweep_dir.path.glob("*/")) if RunDir(p).finished()]
                if finished and not jobs[0].cfg.resume:
                    raise RunDirRefused(f"{sweep_dir} already holds finished jobs ({', '.join(finished[:3])}"
                                        f"{', ...' if len(finished) > 3 else ''}); pass resume=true to skip them, "
                                        f"or pick a new hydra.sweep.dir")
                sweep_dir.ensure_writable("hydra.sweep.dir")
                args = args + [f"hydra.sweep.dir={hydra_quoted(sweep_dir.path)}"]
            else:
                run_dir = claim_run_dir(command, jobs[0])
                if run_dir is None:
                    return 0
                created = new_directories(run_dir.path)
                run_dir.ensure_writable()
    except SanityError as err:
        if debug:
            raise
        fail(str(err))
    if informational:
        return _hydra_main(command, args, source, [], debug)
    try:
        import_tensorflow_quietly(debug)  # only now that the run is known to be valid
    except KeyboardInterrupt:
        if not multirun:
            run_dir.abandon("interrupted", created)
        raise
    if multirun:
        return _hydra_main(command, args, source, [], debug)
    return _run_single(command, jobs[0], run_dir, created, debug)


INFO_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc", "--cfg", "-c")


def claim_run_dir(command: str, job: Job) -> RunDir | None:
    """The single run's directory, checked before Hydra writes into it: `resume=true` with the default
    (timestamped) directory continues the newest unfinished run of this config under ./results; a finished run
    of this config with resume=true is shown again (returns None); anything else that is not ours is refused."""
    run_dir, fingerprint = RunDir(job.run_dir), config_fingerprint(job.cfg)
    resume = command == "run" and job.cfg.resume
    if resume and job.timestamped and not run_dir.path.exists():
        found = RunDir.newest_resumable(Path.cwd() / "results", fingerprint)
        if found is None:
            print("resume: no unfinished run of this config under ./results; starting a new one", file=sys.stderr)
        else:
            print(f"resume: continuing {found}", file=sys.stderr)
            run_dir = found
    if run_dir.check_claim(fingerprint, resume=resume):
        report_finished(run_dir)
        return None
    return run_dir


def report_finished(run_dir: RunDir) -> Path:
    """`resume=true` on a finished run of the same config: nothing to do; show its verdict again."""
    import pandas as pd

    from .report import format_verdict

    print(f"already complete: {run_dir}")
    if not (run_dir.path / "report.html").exists():  # killed after its manifest, or from before pages existed
        from .pages import run_page

        run_page(run_dir.path)
    verdict_file = run_dir.path / "verdict.csv"
    if verdict_file.exists():
        print(format_verdict(pd.read_csv(verdict_file)))
    return run_dir.path


def execute_run(spec, directory: RunDir) -> Path:
    """`sanity run` in its claimed directory: compute the check with the directory's units (resumable), write
    its files, print the verdict."""
    import logging

    from . import core
    from .report import format_verdict
    from .sinks import write_run
    from .units import UnitStore

    fingerprint = config_fingerprint(spec.config)
    owned = not directory.claimed  # a sweep job's directory: Hydra made it, the task claims it here
    if directory.check_claim(fingerprint, resume=spec.resume):
        return report_finished(directory)
    directory.ensure_writable()
    store = UnitStore(directory, fingerprint, log=logging.getLogger("sanity").info)
    store.open()
    try:
        result = core.run_check(spec, store=store)
        write_run(result, directory.path, command=invocation("run"), finished=directory.remove_units)
    finally:
        store.wait()  # units still being compared and saved on the worker thread (a failed run resumes from them)
        if owned:
            directory.release()
    print(f"\n{spec.heading()}:")
    print(format_verdict(result.verdict))
    if spec.trains_copies:
        trained, permuted = result.models.iloc[0], result.models.iloc[1]
        print(f"\nmodels: true-label test accuracy {trained['test_accuracy']:.3f}; permuted-label train accuracy "
              f"{permuted['train_accuracy']:.3f} (memorisation target {spec.train.permuted_target_accuracy})")
    print(f"\nresults: {directory.path}")
    return directory.path


def execute_train(spec, directory: RunDir) -> None:
    """`sanity train`: train (or load from the cache) one model, record it in the directory's manifest."""
    import logging
    import time


    from . import core
    from .io import write_json
    from .manifest import build_manifest

    started = time.time()
    directory.check_claim(config_fingerprint(spec.config))
    directory.ensure_writable()
    trained, dataset = core.train_model(spec, log=logging.getLogger("sanity").info)
    models = core.models_frame(spec, [trained])
    write_json(directory.path / "manifest.json", build_manifest(
        spec.config, provenance=dataset.provenance, models=models.to_dict(orient="records"), phases={},
        started=started, command=invocation("train")))
    directory.remove_units()  # the claim's lock and fingerprint, once the manifest says it is finished
    print(f"{trained.labels}-label {spec.model_name}: train accuracy {trained.info['train_accuracy']:.3f}, "
          f"test accuracy {trained.info['test_accuracy']:.3f} (cache key {trained.key}, {trained.info['cache']})")


def train_directories(job: Job) -> list[str]:
    """`sanity train` directories end in _train wherever the configured patterns (sanity's, or the user's config)
    name the randomization test, which a training has not: the single run's directory is re-resolved in place;
    for a sweep, the job subdirectory override is returned."""
    from omegaconf import OmegaConf, open_dict

    test = "${hydra.runtime.choices.test}"
    patterns = OmegaConf.to_container(job.full.hydra, resolve=False)
    if test in patterns["run"]["dir"]:
        with open_dict(job.full.hydra):
            job.full.hydra.run.dir = patterns["run"]["dir"].replace(test, "train")
        job.run_dir = output_dir(job.full.hydra, "run")
    subdir = patterns["sweep"]["subdir"]
    return [f"hydra.sweep.subdir={subdir.replace(test, 'train')}"] if test in subdir else []


def _report(args: list[str], debug: bool) -> int:
    from .pages import build

    if not args or any(a.startswith("-") for a in args):
        fail("usage: sanity report DIR [DIR ...]; DIR is a finished run, sweep or reproduce-run directory")
    try:
        for directory in args:
            for page in build(Path(directory)):
                print(f"page: {page}")
    except SanityError as err:
        if debug:
            raise
        fail(str(err))
    return 0


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
    if not rest:
        fail("usage: sanity reproduce SUITE [--results DIR] [overrides]; SUITE is a name from configs/suites/ "
             "or a YAML file (see 'sanity --help')")
    try:
        source, rest = config_source(rest)
        if not rest or "=" in rest[0] or rest[0].startswith("-"):
            raise SanityError("usage: sanity reproduce SUITE [--results DIR] [--config-dir DIR] [overrides]")
        return reproduce(rest[0], rest[1:], results.expanduser(), source)  # each job is its own `sanity run`
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


def make_task(command: str, debug: bool, claimed: RunDir | None = None, created: list[Path] = (), spec=None):
    """The Hydra task: `run` or `train` in Hydra's run directory (a single run: the RunDir the CLI claimed before
    Hydra wrote into it, and the spec it parsed). A failed single run leaves no half-made directory
    (RunDir.abandon); a failed sweep job is recorded (error.txt) and the sweep goes on; a job whose directory is
    not ours to write (finished, busy, another config's) is reported and left untouched."""

    def task(cfg) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        from omegaconf import OmegaConf

        from . import sweep
        from .spec import parse

        in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
        run_dir = claimed or RunDir(HydraConfig.get().runtime.output_dir)
        try:
            if in_sweep:
                run_dir.clear_failure()
            job = spec if spec is not None else parse(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
            (execute_run if command == "run" else execute_train)(job, run_dir)
        except SanityError as err:
            if debug:
                raise
            if not in_sweep:
                run_dir.abandon(str(err), list(created))
                fail(str(err))
            # one bad job (e.g. a data set missing offline) must not stop the rest of a sweep
            print(f"sanity: error: job {run_dir.path.name}: {err}", file=sys.stderr)
            sweep.FAILED_JOBS.append(run_dir.path.name)
            if not isinstance(err, RunDirRefused):
                run_dir.record_failure(str(err))
        except KeyboardInterrupt:
            print(f"sanity: interrupted; {run_dir.abandon('interrupted', list(created))}", file=sys.stderr)
            sys.exit(130)
        except Exception as err:  # a bug: keep the traceback, but leave no half-made directory behind
            run_dir.abandon(f"{type(err).__name__}: {one_line(err)}", list(created))
            raise

    return task


def _run_single(command: str, job: Job, run_dir: RunDir, created: list[Path], debug: bool) -> int:
    """One run, as hydra.main would run it (run directory, .hydra/ records, job logging, callbacks), from the
    configuration already composed and validated: composed once, validated once, in the directory just claimed."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.utils import run_job
    from hydra.types import HydraContext, RunMode
    from omegaconf import open_dict

    config = job.full
    with open_dict(config.hydra):
        config.hydra.run.dir = omegaconf_literal(run_dir.path)
        config.hydra.mode = RunMode.RUN
    try:
        run_dir.claim(config_fingerprint(job.cfg))  # locked before Hydra writes .hydra/ and cli.log into it
    except SanityError as err:
        run_dir.abandon(str(err), created)
        fail(str(err))
    try:
        callbacks = Callbacks(config)
        callbacks.on_run_start(config=config, config_name=config.hydra.job.config_name)
        result = run_job(task_function=make_task(command, debug, run_dir, created, job.spec), config=config,
                         job_dir_key="hydra.run.dir", job_subdir_key=None,
                         hydra_context=HydraContext(config_loader=None, callbacks=callbacks))
        callbacks.on_run_end(config=config, config_name=config.hydra.job.config_name, job_return=result)
        _ = result.return_value  # re-raises what the task raised
    finally:
        run_dir.release()
    return 0


def _hydra_main(command: str, args: list[str], source, created: list[Path], debug: bool) -> int:
    """Sweeps (-m, any launcher) and Hydra's informational flags (--cfg, --info, --help) through hydra.main."""
    import hydra
    from hydra.errors import ConfigCompositionException

    from . import sweep

    config_path, config_name, extra = source.hydra_main_args()
    saved_argv, sys.argv = sys.argv, [f"sanity {command}"] + extra + args  # hydra.main reads sys.argv
    sweep.FAILED_JOBS.clear()
    entry = hydra.main(version_base="1.3", config_path=config_path, config_name=config_name)(
        make_task(command, debug))
    try:
        entry()
    except (ValueError, ConfigCompositionException) as err:  # Hydra's own usage errors, e.g. -m with --cfg
        if debug:
            raise
        fail(f"{one_line(err)} (see 'sanity --help')")
    finally:
        sys.argv = saved_argv
    return 2 if sweep.FAILED_JOBS else 0


if __name__ == "__main__":
    sys.exit(main())
