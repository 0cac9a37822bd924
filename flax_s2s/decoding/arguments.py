"""The numbers users pass to the searches, checked where they call them: a NaN, an infinity or an
impossible value is refused by name in one line (ValueError) before anything runs; a forced
prefix gets the one shape that compiles once. `GenerationControls` carries the scalar controls
through the commands and the evaluation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# name -> (what it must be, the test beyond being finite)
_RULES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "alpha": ("a finite number", lambda v: True),
    "temperature": ("a finite number >= 0 (0: argmax)", lambda v: v >= 0),
    "top_p": ("a number in (0, 1]", lambda v: 0 < v <= 1),
    "top_k": ("an integer >= 0 (0: all tokens)", lambda v: v >= 0 and v == int(v)),
    "repetition_penalty": ("a finite number > 0 (1: off)", lambda v: v > 0),
    "no_repeat_ngram_size": ("an integer >= 0 (0: off)", lambda v: v >= 0 and v == int(v)),
    "max_len_a": ("a finite number", lambda v: True),
    "max_len_b": ("a finite number", lambda v: True),
    "forced_bos": ("an integer >= -1 (-1: none)", lambda v: v >= -1 and v == int(v)),
}


def check_arguments(**values: Any) -> None:
    """ValueError "NAME=VALUE: must be ..." for the first value that breaks its rule, among the
    names the searches know (alpha, temperature, top_p, top_k, repetition_penalty,
    no_repeat_ngram_size, max_len_a, max_len_b, forced_bos; others are ignored). Traced values (inside an
    outer jit) cannot be read and pass; an array is checked element by element."""
    for name, value in values.items():
        if name not in _RULES or value is None or isinstance(value, jax.core.Tracer):
            continue
        rule, holds = _RULES[name]
        numbers = np.asarray(value, np.float64).reshape(-1)
        bad = [v for v in numbers.tolist() if not (math.isfinite(v) and holds(v))]
        if bad:
            shown = value if numbers.size == 1 and np.ndim(value) == 0 else f"[... {bad[0]} ...]"
            raise ValueError(f"{name}={shown}: must be {rule}")


@dataclasses.dataclass(frozen=True)
class GenerationControls:
    """The scalar generation controls, as the decode and evaluate commands pass them on (each
    search takes them as keyword arguments: `**controls.arguments()`); checked when made.

    no_repeat_ngram_size: 0 (off) or n: no n-gram occurs twice in an output.
    repetition_penalty: 1 (off) or > 0: logits of tokens already in the output divided by it
      when positive, multiplied when negative.
    max_len_a, max_len_b: each row ends by floor(a * source length + b) tokens (both 0: no limit
      below max_len).
    forced_bos: -1 (none) or the id every output starts with (mBART's target language code).
    """

    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    max_len_a: float = 0.0
    max_len_b: float = 0.0
    forced_bos: int = -1

    def __post_init__(self):
        check_arguments(**self.arguments())

    def arguments(self) -> dict[str, Any]:
        """{name: value}: the keyword arguments of `greedy`, `sample` and `beam_search`."""
        return dataclasses.asdict(self)


def prepare_search(arguments: dict[str, Any]) -> None:
    """Checks a search's bound arguments (`check_arguments`) and replaces its `prefix` by
    `prefix_array`'s [batch, max_len], in place (`_compiled_once`'s `prepare`); a `forced_bos`
    becomes the prefix's first token (and -1 in the call, so that it compiles once)."""
    check_arguments(**arguments)
    batch = arguments["src_tokens"].shape[0]
    pad = arguments["model"].special_tokens.pad
    prefix = with_forced_bos(arguments["prefix"], arguments.get("forced_bos", -1), batch)
    if "forced_bos" in arguments:
        arguments["forced_bos"] = -1
    arguments["prefix"] = prefix_array(prefix, batch, arguments["max_len"], pad)


def with_forced_bos(prefix: Any, forced_bos: Any, batch: int) -> Any:
    """A forced prefix [batch, prefix_len] (or None) with `forced_bos` before each row's tokens;
    unchanged when forced_bos is -1. forced_bos must be a concrete int."""
    if isinstance(forced_bos, jax.core.Tracer):
        raise ValueError("forced_bos: must be a concrete int (it changes the prefix's shape)")
    if forced_bos is None or int(forced_bos) < 0:
        return prefix
    first = np.full((batch, 1), int(forced_bos), np.int32)
    if prefix is None:
        return first
    if isinstance(prefix, jax.core.Tracer):
        return jnp.concatenate([jnp.asarray(first), jnp.asarray(prefix, jnp.int32)], axis=1)
    return np.concatenate([first, np.asarray(prefix, np.int32).reshape(batch, -1)], axis=1)


def prefix_array(prefix: Any, batch: int, max_len: int, pad: int) -> Any:
    """A forced prefix [batch, prefix_len] (PAD after each row's tokens; None: no prefix) as
    int32 [batch, max_len]: cut or PAD-filled, so every prefix shares one compilation."""
    if prefix is None:
        return np.full((batch, max_len), pad, np.int32)
    if np.ndim(prefix) != 2 or np.shape(prefix)[0] != batch:
        raise ValueError(f"prefix: shape {tuple(np.shape(prefix))}, expected [batch={batch}, "
                         "prefix_len]")
    width = min(np.shape(prefix)[1], max_len)
    if isinstance(prefix, jax.core.Tracer):
        cut = jnp.asarray(prefix, jnp.int32)[:, :width]
        return jnp.pad(cut, ((0, 0), (0, max_len - width)), constant_values=pad)
    array = np.full((batch, max_len), pad, np.int32)
    array[:, :width] = np.asarray(prefix)[:, :width]
    return array
