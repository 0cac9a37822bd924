"""Jit-compiled decoding over the decoder step-function seam (see `flax_s2s.models`).

Every function returns `(tokens [batch, max_len], lengths [batch], scores [batch])`: tokens after
EOS are PAD, a length counts the tokens up to and including EOS, a score is the sum of the chosen
tokens' log-probabilities. PAD and BOS are never emitted: their logits are masked before the
softmax, so the probabilities are renormalised over the tokens a decoder may produce. Each function
is compiled once per (model, batch, max_len) and reused.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from flax_s2s.data.vocab import BOS, EOS, PAD
from flax_s2s.models import Seq2Seq

Array = jax.Array


@functools.partial(jax.jit, static_argnames=("model", "max_len"))
def greedy(model: Seq2Seq, variables: Any, src_tokens: Array, max_len: int):
    """Argmax decoding, a `lax.while_loop` that stops once every sequence has emitted EOS.

    Args:
      src_tokens: [batch, src_len] int32, PAD-padded.
      max_len: the most tokens to emit per sequence (static), EOS included.
    """
    batch = src_tokens.shape[0]
    encoded = model.encode(variables, src_tokens)
    cache = model.init_cache(variables, encoded, max_len)
    init = (
        jnp.asarray(0),
        jnp.zeros((batch, max_len), jnp.int32),
        jnp.full((batch,), BOS, jnp.int32),
        jnp.zeros((batch,), bool),
        jnp.zeros((batch,), jnp.float32),
        cache,
    )

    def cond(state):
        position, _, _, finished, _, _ = state
        return (position < max_len) & ~finished.all()

    def body(state):
        position, tokens, prev_tokens, finished, scores, cache = state
        logits, cache = model.step(variables, encoded, cache, prev_tokens, position)
        log_probs = output_log_probs(logits)
        next_tokens = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
        chosen = jnp.take_along_axis(log_probs, next_tokens[:, None], axis=-1)[:, 0]
        next_tokens = jnp.where(finished, PAD, next_tokens)
        scores = scores + jnp.where(finished, 0.0, chosen)
        tokens = tokens.at[:, position].set(next_tokens)
        finished = finished | (next_tokens == EOS)
        return position + 1, tokens, next_tokens, finished, scores, cache

    _, tokens, _, _, scores, _ = jax.lax.while_loop(cond, body, init)
    return tokens, sequence_lengths(tokens), scores


def output_log_probs(logits: Array) -> Array:
    """log_softmax over the tokens a decoder may emit (PAD and BOS masked). [..., vocab]."""
    never = jnp.zeros(logits.shape[-1], bool).at[jnp.array([PAD, BOS])].set(True)
    return jax.nn.log_softmax(jnp.where(never, -jnp.inf, logits.astype(jnp.float32)))


def sequence_lengths(tokens: Array) -> Array:
    """Tokens up to and including the first EOS (all non-PAD tokens when no EOS). [batch]."""
    return (tokens != PAD).sum(-1).astype(jnp.int32)
