"""Parameters several methods share, declared once (sanity_cli/params.py)."""

from __future__ import annotations

import numpy as np

from ..params import Choice, Param, Text

OUTPUTS = ("logit", "probability")  # what is explained: the pre-softmax logit (the paper) or its softmax probability
OUTPUT = Choice("logit", OUTPUTS)
LAYER = Text(None, nullable=True)   # Grad-CAM's conv layer; None: the model's default (its last conv layer)


def _is_baseline(value) -> bool:
    if isinstance(value, str):
        return value in ("zeros", "black")
    values = np.ravel(np.asarray(value, dtype=object))
    return values.size > 0 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                                   for v in values)


# the input x' the path starts from: 'zeros', 'black' (the model's input for a black pixel) or numbers
BASELINE = Param("zeros", _is_baseline, "'zeros', 'black', a number or one number per channel")
