"""The Python API for notebooks: `from sanity_cli import check`.

    result = check(model, x, y, test="cascading", methods=["gradient", "guided_backprop"], n_images=16)
    result.verdict            # the same table `sanity run` prints and writes (pandas)

It runs the CLI's pipeline in this process: the live Keras model and the arrays are saved to a temporary folder
and run as `model=keras data=npz` (so caching, verdicts, plots and tables are those of the CLI, and the verdict
equals the CLI's on the same inputs and seed), with every other choice a config override.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import SanityError


@dataclass
class Result:
    """What one check found: its tables (pandas), every image's normalised maps and the run's files."""

    metrics: pd.DataFrame          # metrics.csv: one row per stage, method, metric and image
    summary: pd.DataFrame          # summary.csv: mean, 95% interval per stage, method and metric
    verdict: pd.DataFrame          # verdict.csv: PASS / FAIL / INCONCLUSIVE per method, with its null
    maps: dict[str, np.ndarray]    # {method: (images, stages, H, W)} absolute maps normalised as the paper's
    stages: list[str]              # the stages' names, the second axis of `maps`
    images: np.ndarray             # the explained images, in [0, 1]
    directory: Path                # the run's files (a temporary folder until save())
    _owned: bool = field(default=True, repr=False)

    def plot(self, image: int = 0):
        """The saliency grid of one explained image (methods x stages, the absolute maps normalised as the paper's)
        as a matplotlib Figure (its cells are figure-level images and texts, not Axes); the run's signed grids are
        its grid_diverging_K.png files (save())."""
        from .plots import saliency_grid_figure

        maps = {name: m[image:image + 1] for name, m in self.maps.items()}
        return saliency_grid_figure(self.images[image:image + 1], maps, self.stages, "absolute")

    def save(self, directory) -> Path:
        """Copy the run's files (the CLI's: tables, grids, report.html, manifest) to `directory` (new or empty)."""
        target = Path(directory).expanduser()
        if target.exists() and any(target.iterdir()):
            raise SanityError(f"{target} is not empty; save into a new or empty folder")
        shutil.copytree(self.directory, target, dirs_exist_ok=True)
        return target

    def __del__(self):
        if self._owned:
            shutil.rmtree(self.directory.parent, ignore_errors=True)


def _override(key: str, value) -> str:
    if isinstance(value, (list, tuple)):
        return f"{key}=[{','.join(str(v) for v in value)}]"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if value is None:
        return f"{key}=null"
    return f"{key}={value}"


def check(model, x, y=None, test: str = "cascading", methods=None, metrics=None, *, x_train=None, y_train=None,
          **overrides) -> Result:
    """Run one sanity check of `model` (a live Keras image classifier) on images `x` (N, H, W[, C]) in [0, 1]
    (uint8 0-255 is read as /255); `y` their labels (default: the model's predictions). `test`: a config of
    the `test` group (cascading, independent, data (needs x_train, y_train), smooth_mprt, efficient_mprt,
    random_logit, input_invariance). `methods`, `metrics`: lists of config names (default: the CLI's).
    `overrides`: any other config value, as keyword arguments (n_images=16, seed=1, budget="paper") or dotted
    keys ({"model.input_range": [-1, 1], "method.smoothgrad.samples": 10}). Returns a Result."""
    import keras

    from . import cli

    if not isinstance(model, keras.Model):
        raise SanityError(f"check() needs a Keras model, got {type(model).__name__}")
    x = np.asarray(x)
    workdir = Path(tempfile.mkdtemp(prefix="sanity-check-"))
    try:
        model_file = workdir / "model.keras"
        model.save(model_file)
        if y is None:  # the model's own top-1, on the images as the run will give them to it
            from omegaconf import OmegaConf

            from .architectures import for_config

            arch = for_config(OmegaConf.create({"name": "keras", "path": str(model_file),
                                                "input_range": overrides.get("model.input_range"),
                                                "preprocess": overrides.get("model.preprocess")}))
            probe = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
            probe = probe[..., None] if probe.ndim == 3 else probe
            y = np.argmax(model.predict(arch.to_model_space(probe), verbose=0), axis=-1)
        arrays = {"x_test": x, "y_test": np.asarray(y)}
        if x_train is not None:
            arrays.update(x_train=np.asarray(x_train), y_train=np.asarray(y_train))
        np.savez(workdir / "data.npz", **arrays)
        args = ["model=keras", f"model.path={model_file}", "data=npz", f"data.path={workdir / 'data.npz'}",
                f"test={test}", f"n_images={overrides.pop('n_images', len(x))}",
                f"hydra.run.dir={workdir / 'run'}"]
        if methods is not None:
            args.append(_override("method", list(methods)))
        if metrics is not None:
            args.append(_override("metric", list(metrics)))
        args += [_override(key, value) for key, value in overrides.items()]
        collect: dict = {}
        code, error = cli.run_in_process(args, collect)
        if code != 0:
            raise SanityError(error or f"check() failed (exit {code}); see the log above")
        run = workdir / "run"
        return Result(metrics=pd.read_csv(run / "metrics.csv"), summary=pd.read_csv(run / "summary.csv"),
                      verdict=pd.read_csv(run / "verdict.csv"), maps=collect["maps"], stages=collect["stages"],
                      images=collect["images"], directory=run)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
