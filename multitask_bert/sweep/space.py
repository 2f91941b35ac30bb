"""A sweep's search space: config keys and the ranges or choices to draw them from.

One YAML file, validated when it is loaded (no Optuna, no torch here)::

    parameters:
      training.learning_rate: {low: 1.0e-5, high: 5.0e-4, log: true}   # float, log scale
      training.epochs: {low: 1, high: 3}                                # whole numbers: int
      training.sampling: {choices: [round_robin, proportional, temperature]}
      training.sampling_temperature: {low: 1.0, high: 4.0, step: 0.5}
      tasks.reviews.heads.sentiment.loss_weight: {low: 0.5, high: 2.0}

A key is anything ``--set key=value`` accepts; whether the config takes each value is checked
against the base config before a trial starts (:meth:`SearchSpace.check_against`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from multitask_bert.errors import ConfigError

_SPEC_KEYS = {"low", "high", "log", "step", "choices", "type"}


@dataclass(frozen=True)
class Parameter:
    """One config key and its range (``low``..``high``) or ``choices``."""

    key: str
    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def distribution(self) -> Any:
        """The Optuna distribution this parameter is drawn from."""
        import optuna

        if self.kind == "categorical":
            return optuna.distributions.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high),
                                                        log=self.log, step=int(self.step or 1))
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log,
                                                      step=self.step)

    def extremes(self) -> list[Any]:
        """The values that show whether the config accepts the range: its ends, or every
        choice."""
        if self.kind == "categorical":
            return list(self.choices)
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]

    def describe(self) -> str:
        if self.kind == "categorical":
            return "one of " + ", ".join(map(str, self.choices))
        scale = ", log" if self.log else ""
        step = f", step {self.step}" if self.step else ""
        low, high = self.extremes()
        return f"{self.kind} in [{low}, {high}]{scale}{step}"


def override(key: str, value: Any) -> str:
    """``key=value`` as ``--set`` reads it back (YAML scalars: floats keep their digits)."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return f"{key}={text.removesuffix('...').strip()}"


@dataclass(frozen=True)
class SearchSpace:
    """The parameters of a sweep, in the file's order."""

    parameters: tuple[Parameter, ...]
    source: str = "<search space>"

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        """Read and validate a search-space YAML.

        Raises:
            ConfigError: naming the file and the parameter for anything malformed.
        """
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: search space file not found (resolved: "
                              f"{path.resolve()})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<search space>") -> SearchSpace:
        if not isinstance(raw, dict) or not isinstance(raw.get("parameters"), dict):
            raise ConfigError(f"{source}: expected a mapping with 'parameters:', one entry per "
                              "config key, e.g. 'training.learning_rate: {low: 1.0e-5, high: "
                              "5.0e-4, log: true}'")
        unknown = set(raw) - {"parameters"}
        if unknown:
            raise ConfigError(f"{source}: unknown top-level key(s) {sorted(unknown)}; only "
                              "'parameters' is read")
        if not raw["parameters"]:
            raise ConfigError(f"{source}: 'parameters' is empty; name at least one config key")
        return cls(tuple(_parameter(str(key), spec, source)
                         for key, spec in raw["parameters"].items()), source)

    def overrides(self, values: Mapping[str, Any]) -> list[str]:
        """``key=value`` overrides for one trial's values."""
        return [override(p.key, values[p.key]) for p in self.parameters]

    def distributions(self) -> dict[str, Any]:
        return {p.key: p.distribution() for p in self.parameters}

    def fingerprint(self) -> str:
        payload = [(p.key, p.kind, p.low, p.high, p.log, p.step, list(p.choices))
                   for p in self.parameters]
        return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()[:8]

    def check_against(self, validate: Callable[[list[str]], Any]) -> None:
        """Try each end of every range (every choice) as an override of the base config:
        ``validate(overrides)`` raises ``ConfigError`` for a value the config refuses.

        Raises:
            ConfigError: naming the search space file, the parameter and the config's reason.
        """
        for parameter in self.parameters:
            for value in parameter.extremes():
                try:
                    validate([override(parameter.key, value)])
                except ConfigError as exc:
                    raise ConfigError(f"{self.source}: parameter {parameter.key!r} = {value!r} "
                                      f"is not a valid config value: {exc}") from None


def _parameter(key: str, spec: Any, source: str) -> Parameter:
    where = f"{source}: parameter {key!r}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected {{low: .., high: ..}} or {{choices: [...]}}, "
                          f"got {spec!r}")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; use low, high, log, "
                          "step, type (int | float) or choices")
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) - {"choices"}:
            raise ConfigError(f"{where}: 'choices' stands alone (no low/high/log/step)")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: 'choices' must be a non-empty list")
        return Parameter(key, "categorical", choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: give both 'low' and 'high' (or 'choices')")
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"{where}: 'low' and 'high' must be numbers, got {low!r}, {high!r}")
    kind = spec.get("type") or ("int" if isinstance(low, int) and isinstance(high, int)
                                else "float")
    if kind not in ("int", "float"):
        raise ConfigError(f"{where}: type must be int or float, got {kind!r}")
    if low >= high:
        raise ConfigError(f"{where}: 'low' ({low}) must be below 'high' ({high})")
    log, step = bool(spec.get("log", False)), spec.get("step")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0")
    if log and step is not None:
        raise ConfigError(f"{where}: 'log' and 'step' cannot be combined")
    if step is not None and (not isinstance(step, (int, float)) or step <= 0):
        raise ConfigError(f"{where}: 'step' must be a positive number")
    return Parameter(key, kind, float(low), float(high), log, step)
