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
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SanityError


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


TESTS = {test.name: test for test in (
    SanityTest("cascading", "model_randomization", cumulative=True, judged="last_stage",
               source="Adebayo et al. 2018, Sec. 3.1"),
    SanityTest("independent", "model_randomization", judged="mean_over_stages", source="Adebayo et al. 2018, Sec. 3.1"),
    SanityTest("data", "data_randomization", source="Adebayo et al. 2018, Sec. 4"),
    SanityTest("smooth_mprt", "model_randomization", cumulative=True, judged="last_stage", smoothing=True,
               source="Hedström et al. 2023, Sanity Checks Revisited"),
    SanityTest("efficient_mprt", "model_randomization", cumulative=True, judged="last_stage", all_at_once=True,
               verdict_metric="entropy_rise", source="Hedström et al. 2023, Sanity Checks Revisited"),
    SanityTest("input_invariance", "input_invariance", source="Kindermans et al. 2019"),
    SanityTest("random_logit", "random_logit", source="Sixt et al. 2020, When explanations lie"),
)}


def get(name: str) -> SanityTest:
    if name not in TESTS:
        raise SanityError(f"unknown test '{name}'; choose from {', '.join(TESTS)} (test=NAME)")
    return TESTS[name]
