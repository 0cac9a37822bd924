"""LoRA (Hu et al. 2021) as a reparameterisation of a params tree: each targeted weight W reads
W + (alpha / rank) * A @ B, with A [in, rank] and B [rank, out] the only trained parameters
(`config.lora`; `flax_s2s.training.frozen` freezes everything else).

Why a reparameterisation of the params pytree, not a LoRA layer inside the modules: it works for
every model kind (the Transformer and its BART layout, T5, the RNN) without touching a module,
so parameter names, pretrained rules and decoding stay as they are; the train step and every
reader of a trained state call `merged` before the model sees the parameters, and what they get
is a plain params tree. Its cost: dropout cannot act on the LoRA input x (the product x A is
never formed apart from x W). `dropout` is instead DropConnect on A: each entry of A is kept with
probability 1 - dropout (and scaled by its inverse) for a whole train step, a mask drawn from
the step's key. Evaluation, decoding and export merge without it.

The factors live beside the base parameters under params["lora"]: "scale" (alpha / rank, a
frozen scalar, so that a checkpoint merges without its config) and "factors", a tree mirroring
the targeted kernels' paths with {"a", "b"} at each. A kernel's input axes are its first, but
for the attention output projection ("out": [heads, head_dim, d_model]) its first two. A starts
normal with variance 1 / in, B at zeros: at initialisation the merged weights are the base
weights exactly, so LoRA starts from the base model's outputs. `Checkpointer.restore_variables`
merges, so decoding, evaluation, warm starts and both exports read a plain checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import flax
import jax
import jax.numpy as jnp

from flax_s2s import config_checks
from flax_s2s.errors import ConfigError

Array = jax.Array
LORA_KEY = "lora"  # the params entry holding scale and factors
FACTORS = ("a", "b")


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """`config.lora`: rank, alpha (the update is scaled by alpha / rank), dropout (DropConnect
    on A in training), targets (regexes searched in "/"-joined parameter paths)."""

    rank: int
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = (r"attention/(query|value)/kernel$",)

    @classmethod
    def from_config(cls, config: Any) -> LoraSpec | None:
        """The spec of `config.lora`, None when its rank is 0 (no LoRA)."""
        lora = config.get("lora")
        if not lora or not lora.rank:
            return None
        return cls(lora.rank, float(lora.alpha), float(lora.dropout), tuple(lora.targets))


def input_axes(path: tuple[str, ...]) -> int:
    """How many leading axes of the kernel at `path` are its inputs (see the module docstring)."""
    return 2 if len(path) >= 2 and path[-2] == "out" else 1


def targeted(params: Any, targets: tuple[str, ...]) -> dict[tuple[str, ...], Any]:
    """{path: leaf} of the parameters (2 or more dimensions) whose "/"-joined path some target
    regex matches."""
    flat = flax.traverse_util.flatten_dict(params)
    return {path: leaf for path, leaf in flat.items()
            if leaf.ndim >= 2 and any(re.search(t, "/".join(path)) for t in targets)}


def add_factors(params: Any, spec: LoraSpec, key: Array) -> dict[str, Any]:
    """`params` (without LoRA) plus params["lora"]: the scale and, for each targeted kernel W,
    A [in, rank] ~ normal(0, 1 / in) and B [rank, out] = 0 (in, out: products of W's input and
    output axes), A's key fold_in(key, i) for the i-th targeted path in sorted order."""
    factors = {}
    for i, (path, leaf) in enumerate(sorted(targeted(params, spec.targets).items())):
        split = input_axes(path)
        fan_in, fan_out = math.prod(leaf.shape[:split]), math.prod(leaf.shape[split:])
        a = jax.random.normal(jax.random.fold_in(key, i), (fan_in, spec.rank), jnp.float32)
        factors[(*path, "a")] = a / math.sqrt(fan_in)
        factors[(*path, "b")] = jnp.zeros((spec.rank, fan_out), jnp.float32)
    lora = {"scale": jnp.asarray(spec.alpha / spec.rank, jnp.float32),
            "factors": flax.traverse_util.unflatten_dict(factors)}
    return {**params, LORA_KEY: lora}


def is_factor(path: str) -> bool:
    """Whether the "/"-joined params path is a LoRA factor (A or B), the trained part."""
    return path.startswith(f"{LORA_KEY}/factors/") and path.rsplit("/", 1)[-1] in FACTORS


def merged(params: Any, rng: Array | None = None, dropout: float = 0.0) -> Any:
    """The plain params tree: each targeted W replaced by W + scale * (A @ B) reshaped to W's
    shape, params["lora"] dropped. `params` without LoRA come back as they are. With `rng` and
    `dropout` > 0 (training), A's entries are dropped with probability `dropout` (kept ones
    scaled by 1 / (1 - dropout))."""
    if LORA_KEY not in params:
        return params
    base = {key: value for key, value in params.items() if key != LORA_KEY}
    lora = params[LORA_KEY]
    flat = flax.traverse_util.flatten_dict(base)
    factors = flax.traverse_util.flatten_dict(lora["factors"])
    for i, path in enumerate(sorted({path[:-1] for path in factors})):
        a, b = factors[(*path, "a")], factors[(*path, "b")]
        if rng is not None and dropout > 0:
            keep = jax.random.bernoulli(jax.random.fold_in(rng, i), 1.0 - dropout, a.shape)
            a = jnp.where(keep, a / (1.0 - dropout), 0.0)
        weight = flat[path]
        delta = (a @ b).reshape(weight.shape) * lora["scale"]
        flat[path] = (weight + delta).astype(weight.dtype)
    return flax.traverse_util.unflatten_dict(flat)


def merged_variables(variables: dict[str, Any]) -> dict[str, Any]:
    """`variables` ({"params", ...}) with their params `merged`."""
    if "params" not in variables:
        return variables
    return {**variables, "params": merged(variables["params"])}


def without_factors(params: Any) -> Any:
    """`params` without params["lora"] (the base model's tree, unmerged)."""
    return {key: value for key, value in params.items() if key != LORA_KEY}


def check_targets(spec: LoraSpec | None, params: Any) -> None:
    """Raises ConfigError naming the first target regex that matches no parameter of 2 or more
    dimensions of the base `params` (a tree or ShapeDtypeStructs)."""
    if spec is None:
        return
    for target in spec.targets:
        if not targeted(params, (target,)):
            example = "/".join(next(iter(flax.traverse_util.flatten_dict(params))))
            raise ConfigError(f"config.lora.targets: {target!r} matches no parameter of 2 or more "
                              f"dimensions (paths read like {example!r})")


def check_config(config: Any) -> None:
    """`config.lora`: a rank >= 0 (0: off); with a rank, alpha > 0, dropout in [0, 1) and
    target regexes that compile."""
    rank = config.lora.rank
    if not isinstance(rank, int) or rank < 0:
        raise ConfigError(f"config.lora.rank={rank!r}: must be an integer >= 0 (0: no LoRA)")
    if not rank:
        return
    config_checks.positive(config, "lora.alpha")
    config_checks.fraction(config, "lora.dropout")
    targets = config.lora.targets
    if isinstance(targets, str) or not targets:
        raise ConfigError(f"config.lora.targets={targets!r}: must be a non-empty tuple of regexes")
    for target in targets:
        check_regex("lora.targets", target)


def check_regex(key: str, pattern: Any) -> None:
    """Raises ConfigError unless `pattern` is a string that compiles as a regex."""
    if not isinstance(pattern, str):
        raise ConfigError(f"config.{key}: {pattern!r} is not a string (a regex over parameter paths)")
    try:
        re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"config.{key}: {pattern!r} is not a regex: {error}") from None
