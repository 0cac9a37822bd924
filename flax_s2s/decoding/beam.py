"""Beam search with the GNMT length penalty over the seam, all inputs of a batch at once.

Beam search relies on one property of the seam: every leaf of `encoded` and of the decoder cache
has the batch as its leading axis (true of an RNN's (h, c) and of a Transformer's per-layer
key/value cache), so tiling and reordering beams are one `jax.tree.map` each. A model may instead
keep its beams' caches where they were written and follow them through a table
(`init_beam_cache` / `reorder_cache`: the Transformer and T5, whose self-attention caches are too
large to copy at every step; see `flax_s2s.models.attention.reorder_beam_cache`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from flax_s2s.decoding.arguments import prepare_search
from flax_s2s.decoding.compiled import _compiled_once
from flax_s2s.decoding.controls import Controls, make_controls, next_log_probs
from flax_s2s.decoding.scores import length_penalty, sequence_lengths
from flax_s2s.models import Seq2Seq

Array = jax.Array
Decoded = tuple[Array, Array, Array]  # tokens, lengths, scores


class _Beams(NamedTuple):
    """Beam-search loop state; -inf marks an empty slot (a beam or hypothesis not yet found).

    The search ranks by its own log-probabilities (the controls' `next_log_probs`), which equal
    the model's unless a repetition penalty reshapes them; scores report the model's."""

    position: Array  # scalar: tokens emitted so far
    live_tokens: Array  # [batch, beam, max_len] prefixes still growing (no EOS)
    live_log_probs: Array  # [batch, beam] log p(prefix) as the search ranks it
    live_model_log_probs: Array  # [batch, beam] log p(prefix) under the model
    finished_tokens: Array  # [batch, beam, max_len] ended by EOS or a length limit, best first
    finished_ranks: Array  # [batch, beam] the search's log p / length_penalty
    finished_scores: Array  # [batch, beam] the model's log p / length_penalty
    cache: Any  # decoder cache of the live beams, leaves [batch * beam, ...]


def _gather_beams(x: Array, beam_indices: Array) -> Array:
    """x [batch, beams, ...], beam_indices [batch, n] -> [batch, n, ...]."""
    return x[jnp.arange(x.shape[0])[:, None], beam_indices]


def _best(ranks: Array, n: int, *values: Array) -> tuple[Array, ...]:
    """The n best of ranks [batch, m] and the matching rows of each of `values` [batch, m, ...],
    best first. On ties lax.top_k prefers the lower index, so hypotheses found earlier stay."""
    best_ranks, indices = jax.lax.top_k(ranks, n)
    return (best_ranks, *(_gather_beams(value, indices) for value in values))


def _beam_cache(model: Any, variables: Any, encoded: Any, max_len: int, beam_size: int) -> Any:
    """The model's cache for beam search: `init_beam_cache` where it has one (a model that
    follows its beams through a table rather than moving its caches), else `init_cache`."""
    if hasattr(model, "init_beam_cache"):
        return model.init_beam_cache(variables, encoded, max_len, beam_size)
    return model.init_cache(variables, encoded, max_len)


def _reorder(model: Any, cache: Any, rows: Array) -> Any:
    """The cache of the new beams, row r continuing old row rows[r]: the model's own
    `reorder_cache` where it has one, else every leaf gathered by row."""
    if hasattr(model, "reorder_cache"):
        return model.reorder_cache(cache, rows)
    return jax.tree.map(lambda leaf: leaf[rows], cache)


@_compiled_once("model", "beam_size", "max_len", prepare=prepare_search)
def beam_search(
    model: Seq2Seq,
    variables: Any,
    src_tokens: Array,
    beam_size: int,
    max_len: int,
    alpha: float = 0.6,
    min_len: int = 0,
    no_repeat_ngram_size: int = 0,
    repetition_penalty: float = 1.0,
    prefix: Array | None = None,
    max_len_a: float = 0.0,
    max_len_b: float = 0.0,
    forced_bos: int = -1,
) -> Decoded:
    """Beam search with the GNMT length penalty, all inputs of a batch at once.

    Each step extends the `beam_size` live prefixes of every input by every token and ranks the
    candidates by log-probability. Candidates ending in EOS that rank among the `beam_size` best
    leave the beam for the finished set (so beam_size 1 with alpha 0 is exactly greedy); the best
    `beam_size` candidates not ending in EOS stay live. At a row's length limit (`max_len`, or
    max_len_a/b) its best candidates finish truncated. Finished hypotheses are ranked by
    log p / length_penalty(length, alpha) and the best `beam_size` kept.

    The loop stops early when, for every input, `beam_size` hypotheses are finished and none can
    be beaten. This rule is exact, not a heuristic: log-probabilities only fall as a prefix grows,
    so no extension of a live prefix scores above best_live_log_prob / max length_penalty over
    the lengths still reachable (valid for any sign of alpha); once the worst kept hypothesis is
    at least that, running on to the limit would return the same hypotheses.

    Args:
      model, variables: as in `greedy`.
      src_tokens: [batch, src_len] int32, PAD-padded.
      beam_size: live prefixes and returned hypotheses per input (static).
      max_len: the most tokens per hypothesis, EOS included (static).
      alpha: length-penalty exponent; 0 ranks by log-probability alone, larger favours longer
        hypotheses (traced: changing it does not recompile).
      min_len: the fewest tokens before EOS (traced). The early stop stays exact: forbidding
        EOS only removes candidates, and the bound already covers every reachable length.
      no_repeat_ngram_size, repetition_penalty, prefix, max_len_a, max_len_b, forced_bos: as
        in `greedy`. With a repetition penalty the search ranks by the penalised log-probabilities (still
        falling as a prefix grows, so the early stop stays exact) while scores stay the model's.

    Returns:
      tokens [batch, beam_size, max_len], lengths [batch, beam_size], scores [batch, beam_size]
      (the model's log p / length penalty), best first as the search ranks them (by the scores
      themselves unless a repetition penalty is on). When fewer than `beam_size` distinct
      hypotheses exist, the rest score -inf.
    """
    batch, specials = src_tokens.shape[0], model.special_tokens
    controls = make_controls(specials, src_tokens, max_len, min_len, no_repeat_ngram_size,
                             repetition_penalty, prefix, max_len_a, max_len_b)
    encoded = model.encode(variables, src_tokens)
    # Beam b of input i is row i * beam_size + b of every encoded and cache leaf.
    encoded = jax.tree.map(lambda x: jnp.repeat(x, beam_size, axis=0), encoded)
    empty = jnp.full((batch, beam_size), -jnp.inf)
    no_tokens = jnp.full((batch, beam_size, max_len), specials.pad, jnp.int32)
    # One live prefix (BOS) per input; identical copies would fill the beam with duplicates.
    init = _Beams(
        position=jnp.asarray(0),
        live_tokens=no_tokens,
        live_log_probs=empty.at[:, 0].set(0.0),
        live_model_log_probs=empty.at[:, 0].set(0.0),
        finished_tokens=no_tokens,
        finished_ranks=empty,
        finished_scores=empty,
        cache=_beam_cache(model, variables, encoded, max_len, beam_size),
    )

    def cond(beams: _Beams) -> Array:
        reachable = jnp.maximum(length_penalty(beams.position + 1, alpha),
                                length_penalty(controls.limits, alpha))
        best_possible = beams.live_log_probs.max(-1) / reachable
        worst_kept = beams.finished_ranks.min(-1)  # -inf while a slot is empty
        return (beams.position < max_len) & ~jnp.all(worst_kept >= best_possible)

    step = _beam_step(model, variables, encoded, controls, beam_size, alpha)
    final = jax.lax.while_loop(cond, step, init)
    tokens = final.finished_tokens
    return tokens, sequence_lengths(tokens, specials.pad), final.finished_scores


def _beam_step(model: Seq2Seq, variables: Any, encoded: Any, controls: Controls, beam_size: int,
               alpha: Array):
    """The loop body of `beam_search`: _Beams -> _Beams one token longer."""
    specials = model.special_tokens
    row_controls = controls.per_beam(beam_size)

    def body(beams: _Beams) -> _Beams:
        position = beams.position
        batch, _, max_len = beams.live_tokens.shape
        prev_tokens = jnp.where(
            position == 0, specials.bos, beams.live_tokens[:, :, jnp.maximum(position - 1, 0)]
        )
        logits, cache = model.step(
            variables, encoded, beams.cache, prev_tokens.reshape(-1), position
        )
        history = beams.live_tokens.reshape(batch * beam_size, max_len)
        model_log_probs, log_probs = (
            x.reshape(batch, beam_size, -1)
            for x in next_log_probs(logits, history, position, row_controls, specials))
        vocab = log_probs.shape[-1]
        candidates = beams.live_log_probs[:, :, None] + log_probs  # [batch, beam, vocab]

        def extend(flat_indices):  # [batch, n] indices into beam * vocab -> tokens [b, n, len]
            prefixes = _gather_beams(beams.live_tokens, flat_indices // vocab)
            return prefixes.at[:, :, position].set(flat_indices % vocab)

        def model_log_prob(flat_indices):  # [batch, n] -> the model's log p of the candidates
            chosen = jnp.take_along_axis(model_log_probs.reshape(batch, -1), flat_indices, -1)
            return _gather_beams(beams.live_model_log_probs, flat_indices // vocab) + chosen

        # Finished: the top candidates that end in EOS, or all of them at the row's limit.
        top_log_probs, top_indices = jax.lax.top_k(candidates.reshape(batch, -1), beam_size)
        at_limit = position + 1 >= controls.limits[:, None]  # [batch, 1]
        ends = (top_indices % vocab == specials.eos) | at_limit
        ends &= jnp.isfinite(top_log_probs)
        penalty = length_penalty(position + 1, alpha)
        finished_ranks, finished_tokens, finished_scores = _best(
            jnp.concatenate([beams.finished_ranks,
                             jnp.where(ends, top_log_probs / penalty, -jnp.inf)], axis=1),
            beam_size,
            jnp.concatenate([beams.finished_tokens, extend(top_indices)], axis=1),
            jnp.concatenate([beams.finished_scores,
                             jnp.where(ends, model_log_prob(top_indices) / penalty, -jnp.inf)],
                            axis=1),
        )

        # Live: the best candidates that do not end in EOS, none past the row's limit; their
        # caches follow them.
        not_eos = jnp.where(jnp.arange(vocab) == specials.eos, -jnp.inf, candidates)
        live_log_probs, live_indices = jax.lax.top_k(not_eos.reshape(batch, -1), beam_size)
        rows = (jnp.arange(batch)[:, None] * beam_size + live_indices // vocab).reshape(-1)
        return _Beams(
            position=position + 1,
            live_tokens=extend(live_indices),
            live_log_probs=jnp.where(at_limit, -jnp.inf, live_log_probs),
            live_model_log_probs=model_log_prob(live_indices),
            finished_tokens=finished_tokens,
            finished_ranks=finished_ranks,
            finished_scores=finished_scores,
            cache=_reorder(model, cache, rows),
        )

    return body
