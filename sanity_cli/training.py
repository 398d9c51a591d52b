"""Train the true-label and permuted-label models, with an atomic, locked, content-keyed model cache.

Cache layout: <cache_dir>/<key>.keras (the model) and <key>.json (what made it, accuracies, file sha256).
The key hashes everything that determines the trained weights, so a changed setting never reuses a stale model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import seeds
from .data import Dataset, fingerprint, permute_labels
from .errors import SanityError, one_line
from .io import atomic_path, sha256_file, write_json
from .trained import TrainedModel


OPTIMIZERS = ("adam", "sgd", "rmsprop")
# 2: a new seeded sample order every epoch, stop on the measured accuracy; 3: the released recipe's L2 penalty
# (train.l2), its held-out split (train.validation_from) and TensorFlow 1's Adam epsilon, 1e-8 (cache key)
TRAINING_VERSION = 3
VALIDATION_FROM = ("start", "end")
ADAM_EPSILON = 1e-8  # tf.train.AdamOptimizer's default, which the released code used (Keras' is 1e-7)


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    max_train_images: int | None
    permuted_target_accuracy: float
    permuted_max_epochs: int
    validation_images: int = 0          # held out of the training split (released code: the first 5,000)
    optimizer: str = "adam"             # adam | sgd | rmsprop (model=keras: model.train.optimizer)
    l2: float = 0.0                     # loss + l2 * sum(w^2) / 2 over the architecture's penalised kernels
    validation_from: str = "start"      # where the held-out images come from: the split's start (released) or end

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
        if self.validation_images < 0:
            raise SanityError(f"train.validation_images must be >= 0, got {self.validation_images}")
        if not self.l2 >= 0:
            raise SanityError(f"train.l2 must be a number >= 0 (0: no penalty), got {self.l2}")
        if self.validation_from not in VALIDATION_FROM:
            raise SanityError(f"train.validation_from must be one of {', '.join(VALIDATION_FROM)}, got "
                              f"{self.validation_from!r}")
        if self.optimizer not in OPTIMIZERS:
            raise SanityError(f"model.train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")


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


def _architecture(arch):
    """A registry name or an architectures.Architecture (model=keras: architectures.KerasFile)."""
    from . import architectures

    return architectures.get(arch) if isinstance(arch, str) else arch


def cache_key(arch, dataset: Dataset, labels: str, seed: int, settings: TrainSettings) -> str:
    """sha256 of everything that determines the trained weights (for model=keras: the file's sha256 too)."""
    from . import models

    arch = _architecture(arch)
    labels = normalize_labels_mode(labels)
    spec = {
        **arch.identity,
        "arch_version": models.ARCHITECTURE_VERSION,
        "training_version": TRAINING_VERSION,
        "validation_images": settings.validation_images,
        "validation_from": settings.validation_from if settings.validation_images else None,
        "l2": settings.l2,
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
    if settings.optimizer != "adam":  # keeps the keys of every model cached before the option existed
        spec["optimizer"] = settings.optimizer
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return f"{arch.name}-{dataset.name}-{labels}-{digest}"


def used_split(dataset: Dataset, settings: TrainSettings):
    """(x, y): the first max_train_images of the training split (all of it when null)."""
    if settings.max_train_images is None:
        return dataset.x_train, dataset.y_train
    return dataset.x_train[: settings.max_train_images], dataset.y_train[: settings.max_train_images]


def held_out(n: int, settings: TrainSettings) -> slice:
    """The held-out images' place in the used training split: its first validation_images (the released code's
    x_train[:5000]) or its last."""
    k = settings.validation_images
    return slice(0, k) if settings.validation_from == "start" else slice(n - k, n)


def training_arrays(dataset: Dataset, labels: str, seed: int, settings: TrainSettings):
    """(x, y) the model is fitted on: the used split less its held-out images (held_out), with the labels
    permuted once (seeded) for labels='permuted'."""
    x, y = used_split(dataset, settings)
    if settings.validation_images:
        keep = np.ones(len(x), bool)
        keep[held_out(len(x), settings)] = False
        x, y = x[keep], y[keep]
    if len(x) == 0:
        raise SanityError(f"no training images left after holding out train.validation_images="
                          f"{settings.validation_images}; lower it")
    if labels == "permuted":
        y = permute_labels(y, seed)
    return x, y


def validation_arrays(dataset: Dataset, settings: TrainSettings):
    """The held-out images (true labels) of the used training split (held_out), or None."""
    if not settings.validation_images:
        return None
    x, y = used_split(dataset, settings)
    return x[held_out(len(x), settings)], y[held_out(len(x), settings)]


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a fresh seeded permutation every epoch. (Keras' fit(shuffle=True) after
    set_random_seed shows the same order in every epoch; a network then learns the sequence, not the data.)"""
    return seeds.rng(seed, seeds.EPOCH_ORDER, epoch).permutation(n)


def penalise(model, arch, l2: float) -> int:
    """The released CNN's `--reg` penalty: loss + l2 * sum over the architecture's penalised kernels of
    tf.nn.l2_loss(W) = sum(W^2) / 2 (Keras' L2(l2 / 2) on each kernel variable; never on biases or the logits
    kernel). The regularizer is set on the variables, not in the layers' config, so the saved model carries no
    penalty. Returns how many kernels are penalised."""
    import keras

    kernels = arch.penalised_kernels(model) if l2 > 0 else []
    for kernel in kernels:
        kernel.regularizer = keras.regularizers.L2(l2 / 2)
    return len(kernels)


def accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> float:
    """Top-1 accuracy of the model's weights as they stand (not Keras' running in-epoch average)."""
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(logits.argmax(axis=1) == y))


class Checkpoint:
    """A resumable training state next to a cache entry: <key>.ckpt.keras (weights and optimizer state)
    and <key>.ckpt.json (the epochs done so far), written atomically after every epoch."""

    def __init__(self, cache: Path, key: str):
        self.model_path, self.meta_path = cache / f"{key}.ckpt.keras", cache / f"{key}.ckpt.json"

    def load(self, steps_per_epoch: int, log):
        """(model, history) of the last finished epoch, or None. The weights and the history are two files:
        a checkpoint whose optimizer step count does not match its history (killed between the two writes)
        is discarded."""
        import keras

        if not self.meta_path.exists():
            return None
        try:
            history = json.loads(self.meta_path.read_text())["history"]
            model = keras.models.load_model(self.model_path, compile=True)
            steps = int(model.optimizer.iterations.numpy())
            if steps != len(history) * steps_per_epoch:
                raise ValueError(f"{steps} optimizer steps for {len(history)} epochs")
        except Exception as err:  # damaged or inconsistent: start again
            log(f"train: checkpoint {self.model_path.name} is unusable ({one_line(err, first_line=True, limit=80)}); "
                f"starting over")
            self.remove()
            return None
        return model, history

    def save(self, model, history: list[dict]) -> None:
        with atomic_path(self.model_path) as tmp:
            model.save(tmp)
        write_json(self.meta_path, {"history": history})

    def remove(self) -> None:
        self.model_path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)


def train(arch, dataset: Dataset, labels: str, seed: int, settings: TrainSettings, log=print,
          checkpoint: Checkpoint | None = None):
    """Train from a fixed seed with Adam on softmax cross-entropy; returns (model, info, per-epoch history).

    Every epoch visits the training set in a new seeded order. The permuted-label model trains until the
    accuracy of its weights on its (permuted) training labels, measured after each epoch, reaches
    train.permuted.target_accuracy, or for train.permuted.max_epochs. With a checkpoint the state is saved
    after every epoch, and a killed training continues where it stopped with the same result.
    """
    arch = _architecture(arch)
    labels = normalize_labels_mode(labels)
    x, y = training_arrays(dataset, labels, seed, settings)
    x = arch.to_model_space(x)  # the images as the model takes them (the same bits for inputs in [0, 1])
    permuted = labels == "permuted"
    max_epochs = settings.permuted_max_epochs if permuted else settings.epochs
    target = settings.permuted_target_accuracy if permuted else None
    model, history = _start(arch, seed, settings, checkpoint, -(-len(x) // settings.batch_size), log)
    goal = f" until train accuracy >= {target}" if permuted else ""
    penalty = f", L2 penalty {settings.l2:g} x sum(w^2)/2 on {', '.join(arch.penalised_layer_names(model))}" \
        if settings.l2 > 0 else ""
    log(f"train: {arch.name} on {dataset.name} with {labels} labels, {len(x)} images, batch {settings.batch_size}, "
        f"up to {max_epochs} epochs{goal}{penalty}")
    _epochs(model, history, x, y, seed, settings, max_epochs, target, checkpoint, log)
    info = _summary(arch, model, history, dataset, x, y, labels, settings, target, log)
    return model, info, history


def _start(arch, seed: int, settings: TrainSettings, checkpoint: Checkpoint | None, steps_per_epoch: int, log):
    """(model, history so far): a fresh seeded model compiled with its optimizer and penalty, or the checkpoint's
    (the penalty put back on: a saved model carries none)."""
    import keras

    state = checkpoint.load(steps_per_epoch, log) if checkpoint else None
    if state is not None:
        model, history = state
        penalise(model, arch, settings.l2)
        log(f"train: resuming from the checkpoint after epoch {len(history)}")
        return model, history
    keras.utils.set_random_seed(seed)
    model = arch.build_untrained(seed)
    optimizer = {"adam": functools.partial(keras.optimizers.Adam, epsilon=ADAM_EPSILON),
                 "sgd": keras.optimizers.SGD,
                 "rmsprop": keras.optimizers.RMSprop}[settings.optimizer](settings.learning_rate)
    penalise(model, arch, settings.l2)
    model.compile(optimizer=optimizer, metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=arch.outputs_logits))
    return model, []


def _epochs(model, history: list[dict], x, y, seed: int, settings: TrainSettings, max_epochs: int, target,
            checkpoint: Checkpoint | None, log) -> None:
    """The remaining epochs, each in its own seeded order, a checkpoint after each; with a `target` (the
    permuted-label model) until the weights as they stand fit that share of their labels."""
    verbose = 1 if sys.stderr.isatty() else 2
    reached = bool(history) and target is not None and history[-1]["train_accuracy"] >= target
    for epoch in range(len(history), max_epochs):
        if reached:
            break
        start = time.time()
        order = epoch_order(len(x), seed, epoch)
        log(f"train: epoch {epoch + 1}/{max_epochs}")
        fit = model.fit(x[order], y[order], batch_size=settings.batch_size, epochs=1, shuffle=False,
                        verbose=verbose)
        row = {"epoch": epoch + 1, "running_accuracy": round(float(fit.history["accuracy"][-1]), 6)}
        if target is not None:  # the stopping rule needs the accuracy of the weights as they stand
            row["train_accuracy"] = accuracy(model, x, y)
            reached = row["train_accuracy"] >= target
            log(f"train: epoch {epoch + 1}: train accuracy {row['train_accuracy']:.4f} of the weights now "
                f"(running in-epoch {row['running_accuracy']:.4f}; target {target})")
        row["seconds"] = round(time.time() - start, 2)
        history.append(row)
        if checkpoint is not None and epoch + 1 < max_epochs and not reached:
            checkpoint.save(model, history)


def _summary(arch, model, history: list[dict], dataset: Dataset, x, y, labels: str, settings: TrainSettings, target,
             log) -> dict:
    """What models.csv reports: the accuracy of the final weights on their training labels, test and held-out
    accuracy, epochs, time; for the permuted-label model its target and whether it memorised its labels."""
    permuted = target is not None
    train_acc = history[-1]["train_accuracy"] if permuted else accuracy(model, x, y)
    info = {
        "labels": labels,
        "epochs_run": len(history),
        "train_images": int(len(x)),
        "train_accuracy": float(train_acc),
        "running_train_accuracy": history[-1]["running_accuracy"],
        "test_accuracy": accuracy(model, arch.to_model_space(dataset.x_test), dataset.y_test),
        "train_seconds": round(sum(row["seconds"] for row in history), 2),
    }
    validation = validation_arrays(dataset, settings)
    if validation is not None:
        info["validation_accuracy"] = accuracy(model, arch.to_model_space(validation[0]), validation[1])
    if permuted:
        info["target_accuracy"] = float(target)
        info["memorised"] = bool(train_acc >= target)
        if not info["memorised"]:
            log(f"train: warning: permuted-label model reached train accuracy {train_acc:.3f} < target "
                f"{target} after {info['epochs_run']} epochs; raise train.permuted.max_epochs "
                f"(budget=paper trains up to 100): the data test is INCONCLUSIVE until it memorises")
    log(f"train: {labels}-label model: train accuracy {train_acc:.3f}, test accuracy {info['test_accuracy']:.3f}")
    return info


def _load_entry(model_path: Path, meta_path: Path, key: str, labels: str, arch: str, log) -> TrainedModel | None:
    """The cached model, or None when there is none or it is corrupt (said in one line: it is retrained)."""
    import keras

    if not (model_path.exists() or meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if sha256_file(model_path) != meta["sha256"]:
            raise ValueError("checksum mismatch")
        model = keras.models.load_model(model_path, compile=False)
    except Exception as err:  # any corruption: report in one line and retrain
        log(f"cache: {model_path.name} is corrupt or incomplete ({one_line(err, first_line=True, limit=120)}); "
            f"retraining")
        return None
    log(f"cache: loaded {labels}-label {arch} from {model_path}")
    return TrainedModel(model, key, labels, dict(meta["info"], cache="hit"))


def load_or_train(arch, dataset: Dataset, labels: str, seed: int, settings: TrainSettings,
                  cache_dir: str | os.PathLike | None = None, log=print) -> TrainedModel:
    """Load the model from the cache, or train and cache it. Concurrent processes serialise on a file lock;
    a read-only cache that holds the model is used as it is."""
    from filelock import FileLock

    settings.validate()
    arch = _architecture(arch)
    labels = normalize_labels_mode(labels)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SanityError(f"cannot create model cache dir {cache} ({err.strerror}); set cache_dir=DIR") from None
    key = cache_key(arch, dataset, labels, seed, settings)
    model_path, meta_path = cache / f"{key}.keras", cache / f"{key}.json"
    if not os.access(cache, os.W_OK):  # loading needs no write: entries appear whole, by an atomic rename
        cached = _load_entry(model_path, meta_path, key, labels, arch.name, log)
        if cached is not None:
            return cached
        raise SanityError(f"the model cache dir {cache} is not writable and holds no {labels}-label {arch.name} for "
                          f"these settings; set cache_dir=DIR or SANITY_CACHE_DIR")
    with FileLock(str(cache / f"{key}.lock")):
        for stale in cache.glob(f".{key}.*.tmp*"):  # left by a process killed while saving this entry
            stale.unlink(missing_ok=True)
        cached = _load_entry(model_path, meta_path, key, labels, arch.name, log)
        if cached is not None:
            Checkpoint(cache, key).remove()  # a training killed after saving this entry left it
            return cached
        checkpoint = Checkpoint(cache, key)
        model, info, history = train(arch, dataset, labels, seed, settings, log=log, checkpoint=checkpoint)
        with atomic_path(model_path) as tmp:
            model.save(tmp)
        write_json(meta_path, {"key": key, "arch": arch.name, "identity": arch.identity,
                               "sha256": sha256_file(model_path), "info": info,
                               "history": history, "data_provenance": dataset.provenance})
        checkpoint.remove()
        log(f"cache: saved {model_path}")
        return TrainedModel(model, key, labels, dict(info, cache="trained"))
