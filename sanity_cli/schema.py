"""The typed schema of sanity's top-level config, as a Hydra structured config: a value of the wrong type
(`n_images=abc`, `plots=maybe`, `train.learning_rate=fast`) is rejected while the config is composed, before any
check or work, with the key named. Group nodes (model, data, test, method, metric, budget) take their shape from
their group files; ranges and choices are checked by config.validate. configs/sanity.yaml lists `sanity_schema`
first in its defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING


@dataclass
class PermutedTraining:
    target_accuracy: float = MISSING
    max_epochs: int = MISSING


@dataclass
class Training:
    epochs: int = MISSING
    batch_size: int = MISSING
    learning_rate: float = MISSING
    max_train_images: Optional[int] = None
    validation_images: int = 0
    validation_from: str = "start"
    l2: Optional[float] = None
    permuted: PermutedTraining = field(default_factory=PermutedTraining)


@dataclass
class Verdict:
    metric: str = MISSING
    rule: str = MISSING
    threshold: float = MISSING


@dataclass
class SanityConfig:
    data: Any = MISSING
    model: Any = MISSING
    test: Any = MISSING
    budget: Any = MISSING
    method: Any = MISSING
    metric: Any = MISSING
    experiment: Any = None
    seed: int = MISSING
    n_images: int = MISSING
    image_choice: str = "random"
    batch_size: int = MISSING
    jit_compile: bool = False
    precision: str = "float32"
    target: str = MISSING
    labels: Any = MISSING        # true / permuted (YAML reads `true` as a boolean)
    resume: bool = MISSING
    cache_dir: Any = None        # a path; config.validate names a non-path value and how to quote it
    train: Training = field(default_factory=Training)
    verdict: Verdict = field(default_factory=Verdict)
    plots: bool = MISSING
    grid_images: int = MISSING


def register() -> None:
    """Store the schema for configs/sanity.yaml's defaults. Not in struct mode: a user's config may add its own
    top-level keys (notes, helper values for interpolation); the typed keys above are checked all the same."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    node = OmegaConf.structured(SanityConfig)
    OmegaConf.set_struct(node, False)
    ConfigStore.instance().store(name="sanity_schema", node=node)
