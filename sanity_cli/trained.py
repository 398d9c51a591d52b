"""A model a run explains, with where it came from: the architectures give them, the model cache makes them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainedModel:
    model: object  # keras.Model
    key: str       # its model-cache key, or what names pretrained weights / your file
    labels: str    # true | permuted: the labels it was trained on
    info: dict = field(default_factory=dict)  # accuracies, epochs, cache status
