"""Saliency methods behind one registry keyed by the config's `kind` (see configs/method/)."""

from __future__ import annotations

import numpy as np

from ..errors import SanityError
from ..params import check
from . import controls, custom, engine, gradcam, gradient, guided_backprop, integrated_gradients, smoothgrad  # noqa: F401
from . import deconvnet, deeplift, gradcam_plus_plus, lrp, occlusion, pair, rise  # noqa: F401
from .options import EngineOptions
from .registry import REGISTRY, MethodSpec, get


def check_params(name: str, spec: MethodSpec, params: dict | None) -> dict:
    """The method's parameters checked against its declaration (one line per problem), defaults filled in."""
    return check(f"method.{name}", spec.params(), params, owner=f"method '{name}'")


def resolve_params(name: str, spec: MethodSpec, params: dict | None, input_range) -> dict:
    """The method's parameters as its function takes them: checked and completed (check_params), `baseline: black`
    becomes the model's value for a black pixel (the low end of input_range: 0 for the MNIST models, -1 for
    Inception), and a noise tunnel's `base` name becomes the composed base method (its MethodSpec), checked too."""
    params = check_params(name, spec, params)
    if spec.kind == "custom":
        try:
            custom.split_name(params.get("function"))
        except SanityError as err:
            raise SanityError(f"method '{name}': {err}") from None
    if params.get("baseline") == "black":
        if input_range is None:
            raise SanityError(f"method '{name}': baseline 'black' is the model's input for a black pixel; pass "
                              f"input_range=(low, high) (e.g. (0, 1), or (-1, 1) for Inception), or a number")
        black = np.asarray(input_range[0], np.float64)  # a number, or one per channel (model.preprocess=torch)
        params["baseline"] = float(black) if black.ndim == 0 else [float(v) for v in black]
    if spec.tunnel:  # a noise tunnel over a base method
        base = params["base"] if isinstance(params["base"], MethodSpec) else get(params["base"])
        if not base.gradient_based:
            valid = ", ".join(sorted(k for k, s in REGISTRY.items() if s.gradient_based))
            raise SanityError(f"method '{name}': base '{base.kind}' is not a gradient-based method; choose from "
                              f"{valid}")
        params["base"] = base
        params["base_params"] = resolve_params(f"{name}.base_params ({base.kind})", base,
                                               params.get("base_params") or {}, input_range)
    return params


def explain(model, images: np.ndarray, targets: np.ndarray, kind: str, params: dict | None = None,
            options: EngineOptions | None = None, seed=0, name: str | None = None, input_range=None) -> np.ndarray:
    """Attribution maps (N,H,W,C) float32 of `images` for `targets` with the registered method `kind`.
    `options`: how the engine runs (EngineOptions: XLA, precision, batch size); `input_range`: the model's input
    for a black and a white pixel, needed by `baseline: black`."""
    name = name or kind
    return explain_many(model, images, targets, [(name, kind, params, seed)], options, input_range)[name]


def explain_many(model, images: np.ndarray, targets: np.ndarray, requests, options: EngineOptions | None = None,
                 input_range=None, logits: bool = False):
    """Several methods' maps of the same images, {name: (N,H,W,C) float32}; `requests`: (name, kind, params, seed)
    for each. The gradient-based methods and the noise tunnels over them share each chunk's model calls
    (engine.maps_many: one forward+backward pass for all of them when their passes per image fit in batch_size);
    Grad-CAM, the controls and custom methods run one by one. With `logits`, returns (maps, the model's logits of
    the images), taken from the gradient passes where one sends the images themselves through the model (at
    float32; predicted otherwise)."""
    images = np.asarray(images, np.float32)
    targets = np.asarray(targets, np.int32)
    options = options or EngineOptions()
    resolved = [(name, get(kind), resolve_params(name, get(kind), dict(params or {}), input_range), seed)
                for name, kind, params, seed in requests]
    if images.ndim != 4:
        raise SanityError(f"images must have shape (N, height, width, channels), got {images.shape}")
    if len(targets) != len(images):
        raise SanityError(f"got {len(images)} images but {len(targets)} target classes")
    if len(images) == 0:
        raise SanityError("no images to explain")
    if any(spec.needs_model for _, spec, _, _ in resolved):
        classes = int(model.output_shape[-1])
        if targets.min() < 0 or targets.max() >= classes:
            raise SanityError(f"target classes must be in 0..{classes - 1} for {model.name}, got "
                              f"{targets.min()}..{targets.max()}")
        expected = tuple(model.input_shape[1:])
        if tuple(images.shape[1:]) != expected:
            raise SanityError(f"images have shape {tuple(images.shape[1:])} but {model.name} expects "
                              f"{expected}; resize the inputs or pick the matching model")
    batched = [(name, spec.recipe(**params), seed) for name, spec, params, seed in resolved if spec.recipe]
    maps, seen_logits = {}, None
    if batched:
        fused = engine.engine_for(model, options).maps_many(images, targets, [recipe for _, recipe, _ in batched],
                                                            [seed for _, _, seed in batched], logits=logits)
        fused, seen_logits = fused if logits else (fused, None)
        maps.update({name: m for (name, _, _), m in zip(batched, fused)})
    for name, spec, params, seed in resolved:
        if spec.recipe:
            continue
        try:
            maps[name] = np.asarray(spec.fn(model, images, targets, options=options, seed=seed, **params), np.float32)
        except SanityError as err:
            if spec.kind != "custom":
                raise
            raise SanityError(f"method '{name}': {err}") from None
    maps = {name: maps[name] for name, _, _, _ in resolved}
    if not logits:
        return maps
    return maps, seen_logits if seen_logits is not None else engine.engine_for(model, options).predict_logits(images)


__all__ = ["REGISTRY", "EngineOptions", "MethodSpec", "explain", "explain_many", "get", "check_params"]
