"""The registry of sanity checks (config group `test`), each declaring what it does, as Quantus' metric classes
declare their properties; no other module decides a test's behaviour from its name.

family      model_randomization (re-initialise blocks of the trained model), data_randomization (a model trained on
            permuted labels), input_invariance (the same function on shifted inputs), random_logit (another class
            explained on the same model)
cumulative  each stage randomizes on top of the previous one (cascading) rather than alone (independent)
judged      which stages the verdict is about: last_stage (everything randomized), mean_over_stages (each block
            alone), single_stage (the one comparison)
smoothing   explanations are averaged over noisy copies of the input first (Hedström et al.'s sMPRT)
all_at_once a single randomized stage with every block re-initialised (Hedström et al.'s eMPRT)
verdict_metric
            the metric the verdict is decided on whatever `verdict.metric` says (eMPRT: its entropy rise; it is
            computed even when `metric=[...]` does not list it)
params      the parameters of its config node (test.NAME), each with its rule and default (sanity_cli/params.py)
heading     what its verdict means, in one line (printed above the verdict table)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .errors import SanityError
from .params import Choice, Flag, Int, Number, Param
from .randomize import INITS, ORDERS

RANDOMIZATION = {"init": Choice("layer", INITS), "init_std": Number(0.01, gt=0), "reset_bn_statistics": Flag(False),
                 "repeats": Int(1, low=1)}
ORDERED = {**RANDOMIZATION, "order": Choice("top_down", ORDERS)}
SMOOTHING = {**RANDOMIZATION, "order": Choice("bottom_up", ORDERS), "samples": Int(50, low=1),
             "noise_magnitude": Number(0.1, low=0)}
INVARIANCE = {"shift": Number(-1.0, nonzero=True), "tolerance": Number(0.1, gt=0)}

SIMILARITY = ("Verdict ({metric}, baseline rule: PASS = after randomization no more similar than the trained model's "
              "maps of two different images (null); FAIL = clearly more similar)")
THRESHOLD = "Verdict ({metric}, threshold rule: FAIL = similarity after randomization >= {threshold})"
COMBINED = ("Verdict (baseline rule on each of {metric}: PASS = by every one after randomization no more similar than "
            "the trained model's maps of two different images (null); FAIL = clearly more similar by at least one)")


@dataclass(frozen=True)
class SanityTest:
    name: str
    family: str
    cumulative: bool = False
    judged: str = "single_stage"
    smoothing: bool = False
    all_at_once: bool = False
    verdict_metric: str | None = None
    source: str = ""
    params: Mapping[str, Param] = field(default_factory=dict)
    heading_text: str = SIMILARITY

    def heading(self, metric: str, rule: str, threshold: float, params: Mapping | None = None,
                combined: list[str] | None = None) -> str:
        """The line above the verdict table: what PASS and FAIL mean for this test and rule (`combined`: the
        metrics verdict.metric=all decides on)."""
        judged_alike = self.verdict_metric is None and self.family != "input_invariance"
        text = THRESHOLD if rule == "threshold" and judged_alike else self.heading_text
        if combined and text == SIMILARITY:
            text, metric = COMBINED, ", ".join(combined)
        elif combined:
            metric = ", ".join(combined)
        return text.format(metric=metric, threshold=threshold, **dict(params or {}))


TESTS = {test.name: test for test in (
    SanityTest("cascading", "model_randomization", cumulative=True, judged="last_stage",
               source="Adebayo et al. 2018, Sec. 3.1", params=ORDERED),
    SanityTest("independent", "model_randomization", judged="mean_over_stages", source="Adebayo et al. 2018, Sec. 3.1",
               params=ORDERED),
    SanityTest("data", "data_randomization", source="Adebayo et al. 2018, Sec. 4"),
    SanityTest("smooth_mprt", "model_randomization", cumulative=True, judged="last_stage", smoothing=True,
               source="Hedström et al. 2023, Sanity Checks Revisited", params=SMOOTHING),
    SanityTest("efficient_mprt", "model_randomization", cumulative=True, judged="last_stage", all_at_once=True,
               verdict_metric="entropy_rise", source="Hedström et al. 2023, Sanity Checks Revisited",
               params=RANDOMIZATION,
               heading_text="Verdict (entropy_rise, efficient MPRT: score = (H(randomized map) - H(trained map)) / "
                            "H(trained map), H the entropy of a histogram of the map's values (n_bins bins), higher = "
                            "the map lost more structure; PASS = clearly above the null, the same score from one "
                            "image's trained map to another's; FAIL = not above it)"),
    SanityTest("input_invariance", "input_invariance", source="Kindermans et al. 2019", params=INVARIANCE,
               heading_text="Verdict (input invariance: PASS = every map unchanged, within a relative {tolerance:g}, "
                            "when the inputs are shifted and the model absorbs the shift; FAIL = the maps change; "
                            "similarity: {metric})"),
    # judged by signed Spearman: both maps are of the same image, so their |map| supports (the digit) agree whatever
    # the class, and spearman_abs, SSIM and HOG of absolute maps would call every class-sensitive map "alike"
    SanityTest("random_logit", "random_logit", source="Sixt et al. 2020, When explanations lie",
               verdict_metric="spearman",
               heading_text="Verdict ({metric}, random logit: PASS = the maps of a random other class are no more "
                            "alike than the maps of two different images (null); FAIL = clearly more alike: the maps "
                            "do not depend on the class)"),
)}


def get(name: str) -> SanityTest:
    if name not in TESTS:
        raise SanityError(f"unknown test '{name}'; choose from {', '.join(TESTS)} (test=NAME)")
    return TESTS[name]
