"""`jax.jit` with every call normalised first, so that a search compiles once per shape however
its callers spell their arguments, and checks them where a user calls it."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def _compiled_once(
    *static_argnames: str, prepare: Callable[[dict[str, Any]], None] | None = None
) -> Callable[[Callable], Callable]:
    """`jax.jit` with `static_argnames`, called with every argument positional, defaults filled
    in and numbers as 32-bit arrays.

    jax.jit keys its cache on how a call passes its arguments: `f(x, 6)`, `f(x, n=6)` and a
    default left out are separate entries, each compiled anew, as are 0.5 and np.float32(0.5).
    Normalising the call first gives one compilation per shape, however callers spell it.

    `prepare(arguments)`, if given, sees the bound arguments (name -> value, defaults filled in)
    before the call and may check them (raising ValueError) or replace values in place.
    """

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)
        static_argnums = tuple(
            i for i, name in enumerate(signature.parameters) if name in static_argnames
        )
        jitted = jax.jit(fn, static_argnums=static_argnums)

        defaults = [p.default for p in signature.parameters.values()]

        @functools.wraps(fn)
        def call(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            if prepare is not None:
                prepare(bound.arguments)
            return jitted(*(
                value if i in static_argnums else _as_array(value, defaults[i])
                for i, value in enumerate(bound.args)
            ))

        call.jitted = jitted  # for .lower(), cache inspection
        return call

    return decorate


def _as_array(value: Any, default: Any) -> Any:
    """A Python or NumPy number as an int32 / float32 array, typed like the parameter's default
    (so alpha=1 and alpha=0.6 share a compilation); anything else unchanged. A NumPy array, not
    a jax one: making that would compile a conversion of its own."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return value
    is_integer = isinstance(default if default is not inspect.Parameter.empty else value,
                            (int, np.integer))
    return np.asarray(value, np.int32 if is_integer else np.float32)
