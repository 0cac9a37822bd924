"""The few ways a config value is checked, for the `check_config` functions that each module
keeps beside the code whose fields they protect (`flax_s2s.training.config` runs them all).

ml_collections already refuses unknown keys and wrongly typed overrides; these catch values that
are well typed but impossible, naming the key and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from flax_s2s.errors import ConfigError


def get(config: Any, dotted: str) -> Any:
    """config["a"]["b"] for "a.b"."""
    value = config
    for part in dotted.split("."):
        value = value[part]
    return value


def one_of(config: Any, key: str, allowed: Iterable[Any]) -> None:
    """config.`key` must be one of `allowed`."""
    allowed = list(allowed)
    value = get(config, key)
    if value not in allowed:
        raise ConfigError(f"config.{key}={value!r}: must be one of {allowed}")


def positive(config: Any, *keys: str) -> None:
    """Each config.`key` must be > 0 and finite (a NaN or infinite value is named)."""
    for key in keys:
        value = get(config, key)
        if not math.isfinite(value):
            raise ConfigError(f"config.{key}={value}: must be a finite number > 0")
        if value <= 0:
            raise ConfigError(f"config.{key}={value}: must be > 0")


def fraction(config: Any, key: str, closed: bool = False, note: str = "") -> None:
    """config.`key` must be in [0, 1) (or [0, 1] when `closed`); `note` follows the rule."""
    value = get(config, key)
    if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        rule = "[0, 1]" if closed else "[0, 1)"
        raise ConfigError(f"config.{key}={value}: must be in {rule}{note}")
