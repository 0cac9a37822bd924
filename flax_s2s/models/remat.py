"""Rematerialisation of the Transformer family's layers (`config.model.remat`): the activations
inside a layer are recomputed in the backward pass instead of kept from the forward one, so a
train step holds about one layer's activations plus each layer's input, at the cost of running
each layer's forward pass twice.

remat: "none" (keep every activation) or "layer" (each encoder and decoder layer wrapped in
  `nn.remat`).
remat_policy: which of a rematerialised layer's values are kept after all, by name of
  `jax.checkpoint_policies`: "nothing_saveable" (only the layer's inputs),
  "dots_with_no_batch_dims_saveable" (also the outputs of the dense projections, x @ W: the
  attention scores and softmax, norms and activations are recomputed), "dots_saveable" (every
  matrix product, the attention's too) or "everything_saveable" (nothing recomputed; for
  measurements).

`layer_class` gives the class a model builds its layers from. The layer's `train` argument
selects dropout and norm statistics in Python, so it is static to the rematerialised function;
its position is read from the layer's signature and must be passed positionally. Parameter
names are unchanged (the layers are named by the attribute that holds them), so a checkpoint
trained with one setting loads under the other, and decoding with the KV cache runs through the
wrapped layers as through the plain ones.
"""

from __future__ import annotations

import inspect
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from flax_s2s import config_checks
from flax_s2s.errors import ConfigError

REMATS = ("none", "layer")  # the allowed `config.model.remat` values
POLICIES = ("nothing_saveable", "dots_with_no_batch_dims_saveable", "dots_saveable",
            "everything_saveable")  # the allowed `config.model.remat_policy` values
REMAT_FIELDS = ("remat", "remat_policy")  # config.model's, which a pretrained model takes too
STATIC_ARGUMENT = "train"  # a layer argument read in Python, so static under remat


def layer_class(cls: type[nn.Module], config: Any) -> type[nn.Module]:
    """The class to build `cls` layers from, as `config` (a model's hyperparameters, with
    `remat` and `remat_policy`) says: `cls` itself (remat "none"), or `cls` with its `__call__`
    rematerialised under the policy, its `train` argument static."""
    remat, policy = config.remat, config.remat_policy
    if remat not in REMATS:
        raise ValueError(f"model.remat must be one of {list(REMATS)}, got {remat!r}")
    if policy not in POLICIES:
        raise ValueError(f"model.remat_policy must be one of {list(POLICIES)}, got {policy!r}")
    if remat == "none":
        return cls
    arguments = list(inspect.signature(cls.__call__).parameters)  # self first, as remat counts
    return nn.remat(cls, static_argnums=(arguments.index(STATIC_ARGUMENT),),
                    policy=getattr(jax.checkpoint_policies, policy))


def check_config(config: ml_collections.ConfigDict) -> None:
    """`config.model.remat` and its policy; remat wraps the Transformer family's layers only."""
    config_checks.one_of(config, "model.remat", REMATS)
    config_checks.one_of(config, "model.remat_policy", POLICIES)
    if config.model.remat != "none" and config.model.type == "lstm":
        raise ConfigError(f"config.model.remat={config.model.remat!r}: rematerialises the layers "
                          "of model.type transformer, bart and t5, not of the RNN (lstm)")
