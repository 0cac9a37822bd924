"""Normalisation as a choice: `make_norm(kind)` with kind in layer | rms | batch | none.

Every norm is called the same way, `norm(x, mask, train)`, with x [..., features] normalised over
its last axis; `mask` [...] marks real (non-pad) positions and `train` picks batch or running
statistics. Only BatchNorm reads them; the others are per-position and ignore both.

Where a model puts its norms is `norm_position`: "pre" normalises what a sublayer reads
(x + f(norm(x))), "post" normalises after the residual sum (norm(x + f(x))). The recurrent model
maps these to the input and the output of each recurrent layer.

Why BatchNorm is delicate in an autoregressive model
----------------------------------------------------
LayerNorm and RMSNorm normalise each position by its own features, so a position's output depends
on that position alone. BatchNorm normalises each feature by statistics over *other* positions,
and in a sequence model that breaks three things the decoder relies on:

1. Padding. Sequences of different lengths share a batch; statistics that counted pad positions
   would depend on how much padding a batch happens to carry. `MaskedBatchNorm` therefore takes
   its mean and variance over the non-pad positions only (batch x time), so padding changes
   nothing.
2. Causality. In the parallel teacher-forced pass the statistics pool every position of every
   sequence, so the output at position t depends, through the mean and variance, on tokens at
   positions after t: a leak of the future that the causal attention mask cannot see (small for
   large batches, but not zero). Step-by-step decoding cannot compute such statistics at all, since
   the future does not exist yet; it has to use running averages. Training and decoding therefore
   compute different functions, and running averages pool all positions, while the distribution of
   activations at the first positions differs from that at later ones.
3. The step-by-step training path. Scheduled sampling unrolls the decoder one position at a time
   (`lax.scan` over `step`), where batch x time statistics do not exist either. The Transformer
   refuses `step(train=True)` with BatchNorm, and the config check refuses norm="batch" together
   with scheduled sampling: BatchNorm trains on the fully teacher-forced path only. The recurrent
   decoder is sequential even when teacher forced; there BatchNorm uses per-step statistics (over
   the batch rows still running at that step) and keeps running averages per step, as in
   Cooijmans et al. 2017, "Recurrent Batch Normalization". Late steps, where few rows still run,
   get noisy statistics from a handful of examples.

The ablation in bench/norm_ablation.py measures what these costs amount to.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

NORM_KINDS = ("layer", "rms", "batch", "none")
NORM_POSITIONS = ("pre", "post")


def masked_moments(x: Array, mask: Array | None) -> tuple[Array, Array, Array]:
    """Per-feature mean and (biased) variance of x [..., features] over the positions where
    `mask` [...] is true, and their count. An empty mask gives mean 0, variance 0, count 0."""
    x = x.astype(jnp.float32)
    weights = jnp.ones(x.shape[:-1], jnp.float32) if mask is None else mask.astype(jnp.float32)
    weights = weights[..., None]
    axes = tuple(range(x.ndim - 1))
    count = weights.sum(axes)[0]
    denominator = jnp.maximum(count, 1.0)
    mean = (x * weights).sum(axes) / denominator
    # Two passes (not E[x^2] - E[x]^2): exact enough to compare against a NumPy reference.
    var = (jnp.square(x - mean) * weights).sum(axes) / denominator
    return mean, var, count


def _row(table: Array, row: Array | None) -> Array:
    """The running statistics of one position, or the only ones (row None)."""
    return table if row is None else table[row]


def _set_row(table: Array, row: Array | None, value: Array) -> Array:
    return value if row is None else table.at[row].set(value)


class MaskedBatchNorm(nn.Module):
    """BatchNorm over the last axis whose statistics skip pad positions.

    In training (`train=True`) it normalises by the masked batch statistics and moves the running
    averages in the "batch_stats" collection towards them (the caller must make that collection
    mutable); otherwise it normalises by the running averages and writes nothing.

    With `num_positions` > 0 it keeps one set of running averages per decoding position (the last
    set serves every later position), for a recurrent decoder that is normalised one step at a
    time: statistics at step 1 and at step 20 differ, and one shared average, moved at every step,
    would mostly remember the last, sparsely populated steps (Cooijmans et al. 2017 keep
    per-step population statistics for the same reason). Calls then pass `position`.

    Why not `flax.linen.BatchNorm(mask=...)`: it divides by the mask count unguarded, so a step
    with no live position (the recurrent decoder's per-step statistics, late positions of a batch
    of short targets) gives NaN statistics and NaN running averages. Here such a step keeps the
    running averages and normalises by them.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    num_positions: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: Array,
        mask: Array | None = None,
        train: bool = False,
        position: Array | int | None = None,
    ) -> Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        shape = (self.num_positions, features) if self.num_positions else (features,)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, shape, jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, shape, jnp.float32)
        row = None
        if self.num_positions:
            if position is None:
                raise ValueError("a MaskedBatchNorm with num_positions needs the position")
            row = jnp.minimum(position, self.num_positions - 1)
        if train:
            batch_mean, batch_var, count = masked_moments(x, mask)
            seen = count > 0
            mean = jnp.where(seen, batch_mean, _row(running_mean.value, row))
            var = jnp.where(seen, batch_var, _row(running_var.value, row))
            if not self.is_initializing():
                momentum = jnp.where(seen, self.momentum, 1.0)
                for running, value in ((running_mean, mean), (running_var, var)):
                    moved = momentum * _row(running.value, row) + (1 - momentum) * value
                    running.value = _set_row(running.value, row, moved)
        else:
            mean, var = _row(running_mean.value, row), _row(running_var.value, row)
        y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + self.epsilon)
        return (y * scale + bias).astype(self.dtype)


class Norm(nn.Module):
    """One of NORM_KINDS behind the common call `norm(x, mask, train)`; see the module docstring.

    Attributes:
      kind: "layer" (LayerNorm), "rms" (RMSNorm), "batch" (MaskedBatchNorm) or "none" (identity).
      dtype: output dtype; statistics are computed in float32 and parameters are float32.
      num_positions: BatchNorm only: per-position running statistics (calls pass `position`).
      epsilon: LayerNorm and RMSNorm only (1e-6; BART's LayerNorm has torch's 1e-5).
    """

    kind: str
    dtype: Any = jnp.float32
    num_positions: int = 0
    epsilon: float = 1e-6

    @nn.compact
    def __call__(
        self,
        x: Array,
        mask: Array | None = None,
        train: bool = False,
        position: Array | int | None = None,
    ) -> Array:
        if self.kind == "layer":
            return nn.LayerNorm(epsilon=self.epsilon, dtype=self.dtype, name="layer_norm")(x)
        if self.kind == "rms":
            return nn.RMSNorm(epsilon=self.epsilon, dtype=self.dtype, name="rms_norm")(x)
        if self.kind == "batch":
            batch_norm = MaskedBatchNorm(
                num_positions=self.num_positions, dtype=self.dtype, name="batch_norm"
            )
            return batch_norm(x, mask, train, position)
        if self.kind == "none":
            return x
        raise ValueError(f"model.norm must be one of {list(NORM_KINDS)}, got {self.kind!r}")


def make_norm(
    kind: str,
    dtype: Any = jnp.float32,
    name: str | None = None,
    num_positions: int = 0,
    epsilon: float = 1e-6,
) -> Norm:
    """A norm of `kind` (one of NORM_KINDS); fails at once, naming the choices, on another kind."""
    if kind not in NORM_KINDS:
        raise ValueError(f"model.norm must be one of {list(NORM_KINDS)}, got {kind!r}")
    return Norm(kind, dtype, num_positions, epsilon, name=name)


def check_position(norm_position: str) -> None:
    if norm_position not in NORM_POSITIONS:
        raise ValueError(
            f"model.norm_position must be one of {list(NORM_POSITIONS)}, got {norm_position!r}"
        )
