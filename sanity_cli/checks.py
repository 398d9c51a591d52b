"""Self-checks before a run's verdict is trusted; each is a log line and a field of the manifest.

1. Guided Backprop really guided: on the trained model its maps differ from plain gradients (the guided
   ReLU swap engaged). On a model without plain ReLUs the swap cannot engage and Guided Backprop *is* the
   gradient; its verdict would then say nothing about Guided Backprop.
2. Every randomization stage changed the model's logits on the explained images (something was randomized).
3. No NaN or Inf in any map (such an image's similarity is left undefined, never compared).
4. Data test: the permuted-label model memorised its labels (train accuracy >= its target).
A check that fails makes the affected verdicts INCONCLUSIVE, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

GUIDED_PROBE_IMAGES = 8


def maps_differ(a: np.ndarray, b: np.ndarray, rtol: float = 1e-6) -> bool:
    """True when max |a - b| exceeds rtol times the larger of max |a|, max |b| (finite arrays: callers check)."""
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)))
    return bool(np.max(np.abs(a - b), initial=0.0) > rtol * scale)


def finite_rows(maps: np.ndarray) -> np.ndarray:
    """(N,) bool: which images' maps hold only finite values."""
    return np.isfinite(np.asarray(maps).reshape(len(maps), -1)).all(axis=1)


@dataclass
class SelfChecks:
    log: Callable[[str], None]
    guided_swap_engaged: bool | None = None              # None: no Guided Backprop method in the run
    stages_changed_logits: dict[str, bool] = field(default_factory=dict)
    nonfinite_maps: dict[str, int] = field(default_factory=dict)   # method -> images with NaN/Inf maps
    nonfinite_logits: list[str] = field(default_factory=list)      # stages whose model gave NaN/Inf logits
    permuted_memorised: bool | None = None               # None: not a data test
    permuted_reason: str = ""

    def check_guided_swap(self, engine, images: np.ndarray, targets: np.ndarray) -> bool:
        """Guided Backprop and Gradient maps of the trained model on a few explained images (engine: the run's
        methods.engine.GradientEngine)."""
        n = min(len(images), GUIDED_PROBE_IMAGES)
        plain = engine.gradients(images[:n], targets[:n])
        guided = engine.gradients(images[:n], targets[:n], relu_rule="guided")
        if not (np.isfinite(plain).all() and np.isfinite(guided).all()):
            self.guided_swap_engaged = None  # cannot tell; the NaN/Inf maps check reports the maps themselves
            self.log("self-check FAILED: the trained model's gradients hold NaN/Inf; the guided ReLU swap "
                     "cannot be checked")
            return False
        self.guided_swap_engaged = maps_differ(plain, guided)
        if self.guided_swap_engaged:
            self.log("self-check passed: Guided Backprop's maps differ from Gradient's on the trained model "
                     "(the guided ReLU swap engaged)")
        else:
            self.log("self-check FAILED: Guided Backprop's maps equal Gradient's on the trained model: the model "
                     "has no plain ReLU for the guided swap; Guided Backprop verdicts are INCONCLUSIVE")
        return self.guided_swap_engaged

    def check_stage(self, unit: str, block: str, before: np.ndarray, after: np.ndarray) -> bool:
        if not np.isfinite(after).all():
            self.nonfinite_logits.append(unit)
            self.log(f"self-check FAILED: randomizing {block} ({unit}) gave NaN/Inf logits; verdicts are "
                     f"INCONCLUSIVE")
            return False
        changed = maps_differ(before, after)
        self.stages_changed_logits[unit] = changed
        if not changed:
            self.log(f"self-check FAILED: randomizing {block} ({unit}) left the model's logits unchanged; "
                     f"verdicts are INCONCLUSIVE")
        return changed

    def record_nonfinite(self, method: str, bad_images: int) -> None:
        """The most images with NaN/Inf maps at any one stage."""
        if bad_images:
            self.nonfinite_maps[method] = max(self.nonfinite_maps.get(method, 0), int(bad_images))

    def check_memorised(self, info: dict, target: float) -> bool:
        accuracy = float(info["train_accuracy"])
        self.permuted_memorised = bool(info.get("memorised", accuracy >= target))
        if self.permuted_memorised:
            self.log(f"self-check passed: the permuted-label model fits {accuracy:.3f} of its labels "
                     f"(target {target})")
        else:
            self.permuted_reason = (f"the permuted-label model fits only {accuracy:.3f} of its labels (target "
                                    f"{target}): it has not memorised them")
            self.log(f"self-check FAILED: {self.permuted_reason}; the data test is INCONCLUSIVE")
        return self.permuted_memorised

    def finish(self) -> None:
        """The checks whose results come in over the run: one summary line each."""
        if self.stages_changed_logits and all(self.stages_changed_logits.values()):
            self.log(f"self-check passed: all {len(self.stages_changed_logits)} randomization stages changed "
                     f"the model's logits")
        if self.nonfinite_maps:
            listed = ", ".join(f"{m} ({n} images)" for m, n in self.nonfinite_maps.items())
            self.log(f"self-check FAILED: NaN/Inf in the maps of {listed}; those similarities are undefined")
        else:
            self.log("self-check passed: no NaN/Inf in any map")

    def problems(self, guided_methods: set[str]) -> dict[str, list[str]]:
        """Unmet preconditions per method ("*": every method), for report.verdict."""
        found: dict[str, list[str]] = {}
        unchanged = [unit for unit, changed in self.stages_changed_logits.items() if not changed]
        if unchanged:
            found.setdefault("*", []).append(f"randomization left the logits unchanged ({', '.join(unchanged)})")
        if self.nonfinite_logits:
            found.setdefault("*", []).append(f"NaN/Inf logits after randomization ({', '.join(self.nonfinite_logits)})")
        if self.permuted_memorised is False:
            found.setdefault("*", []).append(self.permuted_reason)
        if self.guided_swap_engaged is False:
            for method in guided_methods:
                found.setdefault(method, []).append("the guided ReLU swap did not engage (no plain ReLU)")
        for method, count in self.nonfinite_maps.items():
            found.setdefault(method, []).append(f"NaN/Inf in the maps of {count} images")
        return found

    def as_dict(self) -> dict:
        return {"guided_swap_engaged": self.guided_swap_engaged,
                "stages_changed_logits": self.stages_changed_logits,
                "all_stages_changed_logits": all(self.stages_changed_logits.values())
                if self.stages_changed_logits else None,
                "nonfinite_maps": self.nonfinite_maps, "no_nonfinite_maps": not self.nonfinite_maps,
                "nonfinite_logits": self.nonfinite_logits,
                "permuted_memorised": self.permuted_memorised}
