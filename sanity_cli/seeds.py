"""The owner of every random stream: each use of randomness draws from its own stream of the run's one `seed`,
so that adding a draw somewhere never shifts another (numpy's SeedSequence of [seed, STREAM, *more])."""

from __future__ import annotations

import numpy as np

# one tag per stream; never reuse or renumber one (cached models and saved runs depend on them)
LABELS = 0          # the permuted training labels (data.permute_labels; a plain default_rng(seed))
IMAGES = 1          # which test images are explained (image_choice=random)
EPOCH_ORDER = 2     # the training set's order in each epoch
NULL_PAIRS = 3      # the disjoint image pairs of the null similarity
SMOOTHING = 7       # sMPRT's noisy copies of each input
OTHER_CLASS = 11    # the random other class of the random-logit test
RANDOM_WEIGHTS = 13  # the untrained weights of model.weights=random (Sec. 5's linear and conv_sumpool)


def rng(seed: int, stream: int, *more: int) -> np.random.Generator:
    """The generator of one stream of the run's seed (and, within it, of one epoch, image, ...)."""
    return np.random.default_rng([int(seed), int(stream), *(int(m) for m in more)])


def label_rng(seed: int) -> np.random.Generator:
    """The permuted labels' generator: default_rng(seed) itself (older than the streams; cached models use it)."""
    return np.random.default_rng(int(seed))


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from a tuple of integers (seed, repeat, block index, variable index): re-initialisation."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)
