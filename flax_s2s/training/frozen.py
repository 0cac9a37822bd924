"""Frozen parameters (`config.frozen`, and everything but the factors under `config.lora`): the
parameters that a run keeps as they start, their gradients never formed and their optimizer state
never allocated.

`config.frozen` is a tuple of regexes, each searched (`re.search`) in the "/"-joined path of
every parameter, e.g. "encoder_layers_0/self_attention/query/kernel"; a parameter that one of
them matches is frozen. With LoRA (`flax_s2s.lora`) every parameter but the LoRA factors is
frozen as well.

- The optimizer (`wrap_optimizer`) is optax's `multi_transform`: the run's optimizer over the
  trained parameters, `optax.set_to_zero()` over the frozen ones, so adam's moments exist for
  the trained ones only (the frozen leaves hold optax's empty `MaskedNode`).
- The train step (`split` / `join` / `full_gradient`) differentiates the loss with respect to
  the trained parameters alone, so no gradient of a frozen one is computed or held, and puts
  the frozen arrays back unchanged after the update (bit-identical, whatever the optimizer
  does with zeros).
With nothing frozen, every function here hands back what it was given: the optimizer state and
the step are those of a run without this module.
"""

from __future__ import annotations

import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from flax_s2s import lora
from flax_s2s.errors import ConfigError

TRAINED, FROZEN = "trained", "frozen"  # the optimizer's labels


def frozen_paths(params: Any, config: ml_collections.ConfigDict) -> set[str]:
    """The "/"-joined paths of the frozen leaves of `params` (a tree or ShapeDtypeStructs)."""
    patterns = tuple(config.get("frozen", ()))
    with_lora = lora.LoraSpec.from_config(config) is not None
    paths = flax.traverse_util.flatten_dict(params, sep="/")
    return {path for path in paths
            if any(re.search(p, path) for p in patterns) or (with_lora and not lora.is_factor(path))}


def labels(params: Any, config: ml_collections.ConfigDict) -> Any:
    """A tree like `params` of TRAINED / FROZEN, for `optax.multi_transform`."""
    frozen = frozen_paths(params, config)
    flat = flax.traverse_util.flatten_dict(params, sep="/")
    return flax.traverse_util.unflatten_dict(
        {path: FROZEN if path in frozen else TRAINED for path in flat}, sep="/")


def freezes(config: ml_collections.ConfigDict) -> bool:
    """Whether the config freezes any parameter."""
    return bool(tuple(config.get("frozen", ()))) or lora.LoraSpec.from_config(config) is not None


def wrap_optimizer(tx: optax.GradientTransformation,
                   config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """`tx` over the trained parameters, `set_to_zero` over the frozen; `tx` itself when the
    config freezes nothing."""
    if not freezes(config):
        return tx
    return optax.multi_transform({TRAINED: tx, FROZEN: optax.set_to_zero()},
                                 lambda params: labels(params, config))


def split(params: Any, config: ml_collections.ConfigDict) -> tuple[Any, dict[str, Any] | None]:
    """(trained, frozen): two flat {path: leaf} dicts of `params`; (params, None) when the
    config freezes nothing."""
    if not freezes(config):
        return params, None
    frozen = frozen_paths(params, config)
    flat = flax.traverse_util.flatten_dict(params, sep="/")
    return ({path: leaf for path, leaf in flat.items() if path not in frozen},
            {path: leaf for path, leaf in flat.items() if path in frozen})


def join(trained: Any, frozen: dict[str, Any] | None) -> Any:
    """The params tree from `split`'s halves."""
    if frozen is None:
        return trained
    return flax.traverse_util.unflatten_dict({**trained, **frozen}, sep="/")


def full_gradient(grads: Any, frozen: dict[str, Any] | None) -> Any:
    """A gradient of the trained parameters (`split`'s first half) as a tree like the params,
    zeros at the frozen ones (which `set_to_zero` never reads, so XLA never forms them)."""
    if frozen is None:
        return grads
    return join(grads, jax.tree.map(jnp.zeros_like, frozen))


def check_params(config: ml_collections.ConfigDict, params: Any) -> None:
    """Raises ConfigError naming the first `config.frozen` regex that matches no path of the
    model's `params` (without LoRA factors), or saying that every parameter would be frozen."""
    paths = list(flax.traverse_util.flatten_dict(params, sep="/"))
    patterns = tuple(config.get("frozen", ()))
    for pattern in patterns:
        if not any(re.search(pattern, path) for path in paths):
            raise ConfigError(f"config.frozen: {pattern!r} matches no parameter path (they read "
                              f"like {paths[0]!r})")
    if patterns and lora.LoraSpec.from_config(config) is None and all(
            any(re.search(p, path) for p in patterns) for path in paths):
        raise ConfigError(f"config.frozen={patterns}: freezes every parameter; nothing would train")


def check_config(config: ml_collections.ConfigDict) -> None:
    """`config.frozen`: a tuple of regexes that compile (which paths they match is checked
    against the model, `check_params`)."""
    patterns = config.frozen
    if isinstance(patterns, str):
        raise ConfigError(f"config.frozen={patterns!r}: must be a tuple of regexes, e.g. "
                          f"({patterns!r},)")
    for pattern in patterns:
        lora.check_regex("frozen", pattern)
