"""Train the true-label and permuted-label models, with an atomic, locked, content-keyed model cache.

Cache layout: <cache_dir>/<key>.keras (the model) and <key>.json (what made it, accuracies, file sha256).
The key hashes everything that determines the trained weights, so a changed setting never reuses a stale model.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import models
from .data import Dataset, fingerprint, permute_labels
from .errors import SanityError
from .io import atomic_path, write_json


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    max_train_images: int | None
    permuted_target_accuracy: float
    permuted_max_epochs: int

    def validate(self) -> None:
        if self.epochs < 1:
            raise SanityError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise SanityError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise SanityError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        if self.max_train_images is not None and self.max_train_images < 1:
            raise SanityError(f"train.max_train_images must be >= 1 or null, got {self.max_train_images}")
        if not 0 < self.permuted_target_accuracy <= 1:
            raise SanityError(
                f"train.permuted.target_accuracy must be in (0, 1], got {self.permuted_target_accuracy}")
        if self.permuted_max_epochs < 1:
            raise SanityError(f"train.permuted.max_epochs must be >= 1, got {self.permuted_max_epochs}")


@dataclass
class TrainedModel:
    model: object  # keras.Model
    key: str
    labels: str
    info: dict = field(default_factory=dict)  # accuracies, epochs, cache status


def default_cache_dir() -> Path:
    env = os.environ.get("SANITY_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sanity" / "models"


def normalize_labels_mode(labels) -> str:
    """`labels=true` arrives from Hydra as a boolean; accept it and the strings 'true' / 'permuted'."""
    if labels is True or str(labels).lower() == "true":
        return "true"
    if str(labels).lower() == "permuted":
        return "permuted"
    raise SanityError(f"labels must be 'true' or 'permuted', got '{labels}'")


def cache_key(arch: str, dataset: Dataset, labels: str, seed: int, settings: TrainSettings) -> str:
    """sha256 of everything that determines the trained weights."""
    labels = normalize_labels_mode(labels)
    spec = {
        "arch": arch,
        "arch_version": models.ARCHITECTURE_VERSION,
        "data": dataset.name,
        "data_fingerprint": fingerprint(dataset),
        "labels": labels,
        "seed": int(seed),
        "epochs": settings.epochs if labels == "true" else None,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "max_train_images": settings.max_train_images,
        "permuted_target_accuracy": settings.permuted_target_accuracy if labels == "permuted" else None,
        "permuted_max_epochs": settings.permuted_max_epochs if labels == "permuted" else None,
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return f"{arch}-{dataset.name}-{labels}-{digest}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def training_arrays(dataset: Dataset, labels: str, seed: int, settings: TrainSettings):
    x, y = dataset.x_train, dataset.y_train
    if settings.max_train_images is not None:
        x, y = x[: settings.max_train_images], y[: settings.max_train_images]
    if labels == "permuted":
        y = permute_labels(y, seed)
    return x, y


def stop_at_accuracy(target: float):
    """Keras callback: stop when the epoch's training accuracy reaches the target (memorisation)."""
    import keras

    def on_epoch_end(epoch, logs=None):
        if logs and logs.get("accuracy", 0.0) >= target:
            callback.model.stop_training = True

    callback = keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)
    return callback


def train(arch: str, dataset: Dataset, labels: str, seed: int, settings: TrainSettings, log=print):
    """Train from a fixed seed with Adam on softmax cross-entropy; returns (model, info)."""
    import keras

    labels = normalize_labels_mode(labels)
    keras.utils.set_random_seed(seed)
    model = models.build(arch)
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = training_arrays(dataset, labels, seed, settings)
    if labels == "true":
        epochs, callbacks = settings.epochs, []
    else:
        epochs, callbacks = settings.permuted_max_epochs, [stop_at_accuracy(settings.permuted_target_accuracy)]
    log(f"train: {arch} on {dataset.name} with {labels} labels, {len(x)} images, up to {epochs} epochs")
    start = time.time()
    history = model.fit(x, y, batch_size=settings.batch_size, epochs=epochs, shuffle=True,
                        callbacks=callbacks, verbose=1 if sys.stderr.isatty() else 2)
    _, train_acc = model.evaluate(x, y, batch_size=1024, verbose=0)
    _, test_acc = model.evaluate(dataset.x_test, dataset.y_test, batch_size=1024, verbose=0)
    info = {
        "labels": labels,
        "epochs_run": len(history.history["loss"]),
        "train_images": int(len(x)),
        "train_accuracy": float(train_acc),
        "test_accuracy": float(test_acc),
        "train_seconds": round(time.time() - start, 2),
    }
    if labels == "permuted" and train_acc < settings.permuted_target_accuracy:
        log(f"train: warning: permuted-label model reached train accuracy {train_acc:.3f} < target "
            f"{settings.permuted_target_accuracy} after {info['epochs_run']} epochs; raise "
            f"train.permuted.max_epochs (budget=paper trains up to 100) for a meaningful data test")
    log(f"train: {labels}-label model: train accuracy {train_acc:.3f}, test accuracy {test_acc:.3f}")
    return model, info


def load_or_train(arch: str, dataset: Dataset, labels: str, seed: int, settings: TrainSettings,
                  cache_dir: str | os.PathLike | None = None, log=print) -> TrainedModel:
    """Load the model from the cache, or train and cache it. Concurrent processes serialise on a file lock."""
    import keras
    from filelock import FileLock

    settings.validate()
    labels = normalize_labels_mode(labels)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SanityError(f"cannot create model cache dir {cache} ({err.strerror}); set cache_dir=DIR") from None
    key = cache_key(arch, dataset, labels, seed, settings)
    model_path, meta_path = cache / f"{key}.keras", cache / f"{key}.json"
    if not os.access(cache, os.W_OK):
        raise SanityError(f"the model cache dir {cache} is not writable; set cache_dir=DIR or SANITY_CACHE_DIR")
    with FileLock(str(cache / f"{key}.lock")):
        for stale in cache.glob(f".{key}.*.tmp*"):  # left by a process killed while saving this entry
            stale.unlink(missing_ok=True)
        if model_path.exists() or meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
                if _sha256(model_path) != meta["sha256"]:
                    raise ValueError("checksum mismatch")
                model = keras.models.load_model(model_path, compile=False)
                log(f"cache: loaded {labels}-label {arch} from {model_path}")
                info = dict(meta["info"], cache="hit")
                return TrainedModel(model, key, labels, info)
            except Exception as err:  # any corruption: report in one line and retrain
                reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
                log(f"cache: {model_path.name} is corrupt or incomplete ({reason}); retraining")
        model, info = train(arch, dataset, labels, seed, settings, log=log)
        with atomic_path(model_path) as tmp:
            model.save(tmp)
        write_json(meta_path, {"key": key, "arch": arch, "sha256": _sha256(model_path), "info": info,
                               "data_provenance": dataset.provenance})
        log(f"cache: saved {model_path}")
        return TrainedModel(model, key, labels, dict(info, cache="trained"))
