"""Declared parameters: every registry entry (architecture, data source, test, method, metric) says which
parameters it takes, with each one's rule and default, as scikit-learn's `_parameter_constraints` do; `check`
applies them generically, so each rule, default and error message is written once. TensorFlow-free.

    PARAMS = {"samples": Int(50, low=1), "sigma": Number(0.15, gt=0), "output": Choice("logit", OUTPUTS)}
    values = check("method.smoothgrad", PARAMS, {"samples": 10})  # {"samples": 10, "sigma": 0.15, ...}

A bad value is one line, `{where}.{name} must be {rule}, got {value!r}`; an unknown name lists the valid ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .errors import SanityError

REQUIRED = object()  # no default: the caller must give it


@dataclass(frozen=True)
class Param:
    """One parameter: its default, a test of a value, the rule in words and an optional conversion."""

    default: Any = REQUIRED
    test: Callable[[Any], bool] = lambda value: True
    rule: str = "valid"
    convert: Callable[[Any], Any] = lambda value: value
    nullable: bool = False        # None is a value of its own (e.g. "the model's default layer")
    missing: str = ""             # the message when a REQUIRED value is missing (default: "{where}.{name} is required")
    message: Callable[[str, Any], str] | None = None  # the error line for a bad value (default: "... must be {rule}")

    def check(self, where: str, value):
        if value is None and self.nullable:
            return None
        try:
            ok = self.test(value)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise SanityError(self.message(where, value) if self.message else f"{where} must be {self.rule}, got "
                                                                                f"{value!r}")
        return self.convert(value)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bounds(low=None, high=None, gt=None) -> tuple[Callable[[Any], bool], str]:
    parts, tests = [], []
    if gt is not None:
        parts.append(f"> {gt:g}")
        tests.append(lambda v: v > gt)
    if low is not None:
        parts.append(f">= {low:g}")
        tests.append(lambda v: v >= low)
    if high is not None:
        parts.append(f"<= {high:g}")
        tests.append(lambda v: v <= high)
    return (lambda v: all(t(v) for t in tests)), " and ".join(parts)


def Int(default=REQUIRED, low: int | None = None, high: int | None = None, nullable: bool = False) -> Param:
    """An integer (not a boolean) within [low, high]; low=1 reads 'a positive integer'."""
    within, bounds = _bounds(low, high)
    rule = "a positive integer" if (low, high) == (1, None) else f"an integer{' ' + bounds if bounds else ''}"
    return Param(default, lambda v: _integer(v) and within(v), rule, int, nullable)


def Number(default=REQUIRED, low=None, high=None, gt=None, nonzero: bool = False, nullable: bool = False) -> Param:
    """A finite number (not a boolean), converted to float."""
    within, bounds = _bounds(low, high, gt)
    rule = ("a non-zero number" if nonzero else "a number") + (f" {bounds}" if bounds else "")
    return Param(default, lambda v: _number(v) and within(v) and (v != 0 or not nonzero), rule, float, nullable)


def Choice(default, choices, nullable: bool = False) -> Param:
    choices = tuple(choices)
    return Param(default, lambda v: v in choices, f"one of {', '.join(map(str, choices))}", lambda v: v, nullable)


def Flag(default=REQUIRED) -> Param:
    return Param(default, lambda v: isinstance(v, bool), "true or false")


def Text(default=REQUIRED, nullable: bool = False, missing: str = "") -> Param:
    return Param(default, lambda v: isinstance(v, str) and v != "", "a non-empty string", str, nullable, missing)


def _quote_hint(where: str, value) -> str:
    return (f"{where} must be a path, got {value!r}; to name a file or folder called {value}, quote it: "
            f"{where}=\"'{value}'\"")


def PathValue(default=None, missing: str = "") -> Param:
    """A path given as a string (None when not given, unless `missing` says it is required); a number (Hydra reads
    data.path=123 as one) is named with the fix: how to quote it."""
    return Param(REQUIRED if missing else default, lambda v: isinstance(v, str), "a path", str,
                 nullable=not missing, missing=missing, message=_quote_hint)


def Anything(default=None) -> Param:
    """A value the entry checks itself (a mapping of blocks, a base method's parameters)."""
    return Param(default, nullable=True)


def check(where: str, declared: Mapping[str, Param], given: Mapping | None, *, owner: str = "",
          ignore: tuple[str, ...] = ()) -> dict:
    """The declared parameters' values: the given ones checked (one line per problem), the others their defaults.
    `owner` names the entry in the unknown-parameter message (e.g. "method 'smoothgrad_gradient'"); `ignore`:
    keys of the config node that are not parameters (its `name`, `kind`)."""
    given = {k: v for k, v in dict(given or {}).items() if k not in ignore}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        label = owner or where
        raise SanityError(f"{label} has no parameter {', '.join(unknown)}; valid: {', '.join(declared) or 'none'}")
    values = {}
    for name, param in declared.items():
        if name in given and (given[name] is not None or param.nullable):
            values[name] = param.check(f"{where}.{name}", given[name])
        elif param.default is REQUIRED:
            raise SanityError(param.missing or f"{where}.{name} is required")
        else:
            values[name] = param.default
    return values
