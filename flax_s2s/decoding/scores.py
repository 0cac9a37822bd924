"""What every search reads off the model and reports: the output log-probabilities (PAD and BOS
never emitted), the lengths of decoded rows, and the GNMT length penalty."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flax_s2s.special_tokens import DEFAULT_SPECIAL_TOKENS, SpecialTokens

Array = jax.Array


def output_log_probs(
    logits: Array, special_tokens: SpecialTokens = DEFAULT_SPECIAL_TOKENS
) -> Array:
    """log_softmax over the tokens a decoder may emit (PAD and BOS masked). [..., vocab]."""
    never = jnp.zeros(logits.shape[-1], bool).at[jnp.array(special_tokens.never_emitted)].set(True)
    return jax.nn.log_softmax(jnp.where(never, -jnp.inf, logits.astype(jnp.float32)))


def forbid_early_eos(
    log_probs: Array, position: Array | int, min_len: Array | int, eos: int
) -> Array:
    """log_probs [..., vocab] with EOS at -inf while position < min_len (min_len <= 0: unchanged).
    Not renormalised: the other tokens keep the model's log-probabilities."""
    early = jnp.asarray(position) < min_len
    return log_probs.at[..., eos].set(jnp.where(early, -jnp.inf, log_probs[..., eos]))


def sequence_lengths(tokens: Array, pad: int = DEFAULT_SPECIAL_TOKENS.pad) -> Array:
    """Tokens up to and including the first EOS (all non-PAD tokens when no EOS), for decoded
    tokens [..., max_len] that hold PAD only after EOS. -> [...]."""
    return (tokens != pad).sum(-1).astype(jnp.int32)


def length_penalty(lengths: Array | int, alpha: Array | float) -> Array:
    """GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al. 2016); a beam-search score is
    log p(sequence) / length_penalty(length, alpha)."""
    return ((5.0 + jnp.asarray(lengths, jnp.float32)) / 6.0) ** alpha
