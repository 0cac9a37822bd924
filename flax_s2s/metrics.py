"""Losses and metrics on padded target batches. PAD (id 0) positions never count.

The jitted functions return sums and counts, not means, so values from several batches (and the
padded rows of the last eval batch, whose weight is 0) combine exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from flax_s2s.data.vocab import PAD

Array = jax.Array


def token_weights(tgt_tokens: Array, example_weights: Array | None = None) -> Array:
    """1.0 at non-PAD target positions of examples with weight 1. [batch, tgt_len]."""
    weights = (tgt_tokens != PAD).astype(jnp.float32)
    if example_weights is not None:
        weights = weights * example_weights[:, None]
    return weights


def cross_entropy_sum(
    logits: Array, tgt_tokens: Array, weights: Array, label_smoothing: float = 0.0
) -> Array:
    """Sum over weighted positions of -log p(target), label-smoothed over the vocabulary.

    logits [batch, tgt_len, vocab] float, tgt_tokens [batch, tgt_len] int, weights like tgt_tokens.
    With smoothing s the target distribution is (1 - s) one-hot + s / vocab uniform.
    """
    vocab = logits.shape[-1]
    labels = optax.smooth_labels(jax.nn.one_hot(tgt_tokens, vocab), label_smoothing)
    losses = optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)
    return (losses * weights).sum()


def correct_tokens(predicted: Array, tgt_tokens: Array, weights: Array) -> Array:
    """Weighted count of positions where predicted == target. Both [batch, tgt_len] int."""
    return ((predicted == tgt_tokens) * weights).sum()


def exact_matches(predicted: Array, tgt_tokens: Array, example_weights: Array) -> Array:
    """Weighted count of examples whose predicted tokens equal the targets at every position.

    Both must be PAD after EOS, as decoding returns them and batches store them.
    """
    return ((predicted == tgt_tokens).all(-1) * example_weights).sum()


def accuracy_by_position(predicted: Array, tgt_tokens: Array, weights: Array) -> tuple[Array, Array]:
    """(correct [tgt_len], counted [tgt_len]) summed over the batch, for exposure-bias plots."""
    return ((predicted == tgt_tokens) * weights).sum(0), weights.sum(0)
