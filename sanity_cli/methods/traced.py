"""Traced functions of the methods that run outside the gradient engine (LRP, DeepLIFT, Grad-CAM++, occlusion, RISE),
cached on the model as engine_for caches the engine: traced once per model and key, freed with the model. They read
the model's variables at call time, so in-place randomization never retraces."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import SanityError


def traced(model, key: tuple, options, build: Callable[[bool], Callable]) -> Callable:
    """The model's function for `key` under the engine options' XLA setting, built by build(jit_compile) on first
    use."""
    functions = model.__dict__.get("_sanity_traced")
    if functions is None:
        functions = {}
        object.__setattr__(model, "_sanity_traced", functions)
    key = (*key, options.jit_compile)
    if key not in functions:
        functions[key] = build(options.jit_compile)
    return functions[key]


def channel_baseline(method: str, baseline, channels: int) -> np.ndarray:
    """(channels,) float32 from 'zeros', a number or one number per channel (methods.explain turns 'black' into
    the model's black pixel)."""
    from .integrated_gradients import baseline_value

    try:
        value = baseline_value(baseline)
    except SanityError as err:
        raise SanityError(str(err).replace("integrated_gradients:", f"{method}:", 1)) from None
    try:
        return np.broadcast_to(np.asarray(value, np.float32), (channels,)).copy()
    except ValueError:
        raise SanityError(f"{method}: baseline has {len(np.ravel(value))} values but the model's input has {channels} "
                          f"channels; give one number, or one per channel") from None
