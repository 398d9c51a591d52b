"""How the gradient engine runs a model's passes: explicit options, never module state (a setting of one run can
not leak into the next call in the same process)."""

from __future__ import annotations

from dataclasses import dataclass

# the precision of the gradient methods' passes: float32, or a mixed policy (a clone of the model computing in 16
# bits, its weights float32 and synced from the model before every call; Grad-CAM and the logits stay float32)
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclass(frozen=True)
class EngineOptions:
    """jit_compile: XLA-compile the traced functions (off by default: 2.1x slower for the MNIST CNN on a 2-core
    CPU; XLA rounds differently, so a ReLU near zero may flip); precision: one of PRECISIONS; batch_size: model
    inputs (images x noise samples x path points) per call."""

    jit_compile: bool = False
    precision: str = "float32"
    batch_size: int = 256

    def __post_init__(self):
        from ..errors import SanityError

        if self.precision not in PRECISIONS:
            raise SanityError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise SanityError(f"batch_size must be a positive integer, got {self.batch_size!r}")
