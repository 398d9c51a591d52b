"""The Python API for notebooks: `from sanity_cli import check`.

    result = check(model, x, y, test="cascading", methods=["gradient", "guided_backprop"], n_images=16)
    result.verdict            # the same table `sanity run` prints and writes (pandas)

It composes the same config as the command line (every keyword a config value), parses it into a RunSpec and runs
the core in this process on the live model (a copy: yours is never randomized) and the arrays, in memory; the
verdict equals the CLI's on the same inputs and seed. `result.save(dir)` writes the command line's files.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .core import Result
from .errors import SanityError


def _override(key: str, value) -> str:
    if isinstance(value, (list, tuple)):
        return f"{key}=[{','.join(str(v) for v in value)}]"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if value is None:
        return f"{key}=null"
    return f"{key}={value}"


def _dataset(x, y, x_train, y_train):
    from .data import from_arrays

    arrays = {"x_test": np.asarray(x), "y_test": np.asarray(y)}
    if x_train is not None:
        arrays.update(x_train=np.asarray(x_train), y_train=np.asarray(y_train))
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode() + np.ascontiguousarray(arrays[key]).tobytes())
    return from_arrays(arrays, "check()", {"source": "check()", "name": "npz", "sha256": digest.hexdigest()})


def check(model, x, y=None, test: str = "cascading", methods=None, metrics=None, *, x_train=None, y_train=None,
          **overrides) -> Result:
    """Run one sanity check of `model` (a live Keras image classifier) on images `x` (N, H, W[, C]) in [0, 1]
    (uint8 0-255 is read as /255); `y` their labels (default: the model's predictions). `test`: a config of
    the `test` group (cascading, independent, data (needs x_train, y_train), smooth_mprt, efficient_mprt,
    random_logit, input_invariance). `methods`, `metrics`: lists of config names (default: the CLI's).
    `overrides`: any other config value, as keyword arguments (n_images=16, seed=1, budget="paper") or dotted
    keys ({"model.input_range": [-1, 1], "method.smoothgrad.samples": 10}). Returns a Result; a bad input raises
    SanityError with the command line's one line."""
    from omegaconf import OmegaConf

    from .config import ConfigSource, composition_message, prepare_overrides, yaml_error
    from .core import run_check
    from .spec import parse

    args = ["model=keras", "data=npz", f"test={test}", f"n_images={overrides.pop('n_images', len(x))}"]
    if methods is not None:
        args.append(_override("method", list(methods)))
    if metrics is not None:
        args.append(_override("metric", list(metrics)))
    args += [_override(key, value) for key, value in overrides.items()]
    try:
        full = ConfigSource().compose(prepare_overrides(args))
    except Exception as err:  # Hydra / OmegaConf composition errors: the CLI's one line
        raise SanityError(yaml_error(err) or composition_message(err)) from None
    cfg = OmegaConf.masked_copy(full, [k for k in full if k != "hydra"])
    dataset = _dataset(x, np.zeros(len(x), np.int64) if y is None else y, x_train, y_train)
    spec = parse(cfg, model=model, dataset=dataset)
    if y is None:  # the model's own top-1, on the images as the run gives them to it
        top = spec.arch.build().predict(spec.arch.to_model_space(dataset.x_test), verbose=0)
        dataset.y_test[:] = np.argmax(top, axis=-1)
    return run_check(spec, dataset=dataset, keep_maps=True)
