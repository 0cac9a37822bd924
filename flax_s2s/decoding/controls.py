"""The generation controls as traced arrays, and the next-token log-probabilities a search
chooses from under them (`next_log_probs`).

Every control is a value, not a shape: changing it does not recompile. Each search step computes
two things from the model's logits [rows, vocab]:
- the model's log-probabilities (`output_log_probs`), which the scores add up;
- the log-probabilities the search chooses by: the logits of tokens already in the row
  penalised (`repetition_penalty`) and renormalised, then EOS dropped before `min_len`, then the
  tokens that would repeat an n-gram dropped (`no_repeat_ngram_size`), then, where a forced
  prefix still runs, every token but the prefix's dropped (it keeps the model's log-probability).
  Dropped tokens are set to -inf without renormalising, so with no repetition penalty the
  search ranks hypotheses by the model's own log-probabilities.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from flax_s2s.decoding.scores import forbid_early_eos, output_log_probs
from flax_s2s.special_tokens import SpecialTokens

Array = jax.Array


class Controls(NamedTuple):
    """One call's controls, traced. Rows are the batch's (beam search repeats them per beam)."""

    min_len: Array  # []: EOS forbidden at positions below it
    no_repeat_ngram_size: Array  # []: 0 off
    repetition_penalty: Array  # []: 1 off
    prefix: Array  # [rows, max_len]: the token forced at each position
    forced: Array  # [rows, max_len] bool: whether the prefix still runs at that position
    limits: Array  # [rows]: the most tokens of each row, <= max_len

    def per_beam(self, beam_size: int) -> Controls:
        """The controls of rows [batch * beam_size], beam b of input i in row i * beam_size + b."""
        return self._replace(**{name: jnp.repeat(getattr(self, name), beam_size, axis=0)
                                for name in ("prefix", "forced", "limits")})


def make_controls(
    special_tokens: SpecialTokens, src_tokens: Array, max_len: int, min_len: Array,
    no_repeat_ngram_size: Array, repetition_penalty: Array, prefix: Array, max_len_a: Array,
    max_len_b: Array,
) -> Controls:
    """The traced `Controls` of a search's arguments; prefix [batch, max_len] (PAD-filled, see
    `arguments.prefix_array`): a row's prefix is its tokens before the first PAD."""
    pad = special_tokens.pad
    return Controls(
        min_len=jnp.asarray(min_len),
        no_repeat_ngram_size=jnp.asarray(no_repeat_ngram_size),
        repetition_penalty=jnp.asarray(repetition_penalty, jnp.float32),
        prefix=prefix,
        forced=jnp.cumprod(prefix != pad, axis=-1).astype(bool),
        limits=length_limits(src_tokens, max_len, max_len_a, max_len_b, pad),
    )


def length_limits(src_tokens: Array, max_len: int, a: Array | float, b: Array | float,
                  pad: int) -> Array:
    """The most tokens of each row [batch]: floor(a * source length + b) (fairseq's max_len_a/b),
    kept within [1, max_len]; max_len when a and b are both 0. A source's length counts its
    non-PAD tokens (its EOS too, where the vocabulary appends one)."""
    src_lengths = (src_tokens != pad).sum(-1).astype(jnp.float32)
    limits = jnp.clip(jnp.floor(a * src_lengths + b), 1, max_len).astype(jnp.int32)
    return jnp.where((a == 0) & (b == 0), max_len, limits)


def _seen(history: Array, position: Array, vocab: int) -> Array:
    """[rows, vocab] bool: the tokens among each row's first `position` tokens of history
    [rows, max_len]."""
    rows, length = history.shape
    tokens = jnp.where(jnp.arange(length) < position, history, vocab)  # vocab: dropped
    return jnp.zeros((rows, vocab), bool).at[jnp.arange(rows)[:, None], tokens].set(
        True, mode="drop")


def penalise_repeats(logits: Array, history: Array, position: Array, penalty: Array) -> Array:
    """CTRL's repetition penalty (Keskar et al. 2019) as Hugging Face's
    RepetitionPenaltyLogitsProcessor applies it: the logit of every token among the row's first
    `position` tokens of history [rows, max_len] divided by `penalty` when positive, multiplied
    by it when negative. logits [rows, vocab] -> float32 [rows, vocab]."""
    logits = logits.astype(jnp.float32)
    penalised = jnp.where(logits < 0, logits * penalty, logits / penalty)
    return jnp.where(_seen(history, position, logits.shape[-1]), penalised, logits)


def repeated_ngram_bans(history: Array, position: Array, n: Array, vocab: int) -> Array:
    """[rows, vocab] bool: the tokens that would complete, at `position`, an n-gram that already
    occurs in the row's first `position` tokens of history [rows, max_len] (Hugging Face's
    NoRepeatNGramLogitsProcessor, fairseq's no_repeat_ngram_size). n >= 1 is traced: the last
    n - 1 tokens are compared with every window of the buffer, in n - 1 passes of [rows, max_len].
    """
    rows, length = history.shape
    doubled = jnp.concatenate([history, history], axis=1)  # columns past `length`: never used
    # Window i (tokens i .. i + n - 1) lies among the tokens so far when i + n <= position.
    complete = jnp.broadcast_to(jnp.arange(length) + n <= position, history.shape)

    def same(k, match):  # token k of every window against token k of the last n - 1
        window = jax.lax.dynamic_slice_in_dim(doubled, k, length, axis=1)
        last = jax.lax.dynamic_slice_in_dim(doubled, jnp.maximum(position - n + 1 + k, 0), 1,
                                            axis=1)
        return match & (window == last)

    match = jax.lax.fori_loop(0, n - 1, same, complete)
    completing = jax.lax.dynamic_slice_in_dim(doubled, n - 1, length, axis=1)
    banned = jnp.where(match, completing, vocab)  # vocab: dropped
    return jnp.zeros((rows, vocab), bool).at[jnp.arange(rows)[:, None], banned].set(
        True, mode="drop")


def next_log_probs(
    logits: Array, history: Array, position: Array, controls: Controls,
    special_tokens: SpecialTokens,
) -> tuple[Array, Array]:
    """(the model's log-probabilities, those the search chooses by), both [rows, vocab], from
    logits [rows, vocab] at `position` after history [rows, max_len] (PAD from `position` on);
    see the module docstring for the order of the controls."""
    model_log_probs = output_log_probs(logits, special_tokens)
    penalty, n = controls.repetition_penalty, controls.no_repeat_ngram_size
    search = jax.lax.cond(
        penalty != 1,
        lambda: output_log_probs(penalise_repeats(logits, history, position, penalty),
                                 special_tokens),
        lambda: model_log_probs,
    )
    search = forbid_early_eos(search, position, controls.min_len, special_tokens.eos)
    vocab = logits.shape[-1]
    banned = jax.lax.cond(n > 0, lambda: repeated_ngram_bans(history, position, n, vocab),
                          lambda: jnp.zeros(search.shape, bool))
    search = jnp.where(banned, -jnp.inf, search)
    forced = controls.forced[:, position][:, None]
    only_prefix = jnp.arange(vocab) == controls.prefix[:, position][:, None]
    search = jnp.where(forced, jnp.where(only_prefix, model_log_probs, -jnp.inf), search)
    return model_log_probs, search
