"""Jit-compiled decoding over the decoder step-function seam (see `flax_s2s.models`).

Three searches share one set of conventions, so their outputs compare directly:
- `greedy` and `sample` return `(tokens [batch, max_len], lengths [batch], scores [batch])`;
  `beam_search` returns the same with a beam axis after batch, hypotheses best first.
- Special tokens are the model's (`model.special_tokens`): decoding starts from its BOS, stops a
  row at its EOS and fills the rest with its PAD.
- Tokens after EOS are PAD; a length counts the tokens up to and including EOS. A sequence that
  reaches `max_len` without EOS ends there (truncated) and its length is `max_len`.
- `min_len` (default 0) forbids EOS at positions before it: every output has at least `min_len`
  tokens before its EOS (fairseq's convention), so its length is at least min_len + 1, or
  `max_len` when it is truncated. EOS is masked after the softmax, not before: scores stay the
  model's own log-probabilities, and a hypothesis scores the same with or without the constraint.
- PAD and BOS are never emitted: their logits are masked before the softmax, so probabilities are
  renormalised over the tokens a decoder may produce (`output_log_probs`).
- A greedy or sampled score is the sum of the emitted tokens' log-probabilities under the model
  (before any temperature or truncation); a beam-search score is that sum divided by the GNMT
  length penalty ((5 + length) / 6) ** alpha, which is the same number when alpha = 0.

Each function is compiled once per (model, batch, src_len, max_len[, beam_size]) and reused:
temperature, top_k, top_p, alpha and min_len are traced values, so changing them does not recompile, and
neither does passing an argument by keyword instead of by position (see `_compiled_once`).

The functions never look inside a model. Beam search relies on one property of the seam: every
leaf of `encoded` and of the decoder cache has the batch as its leading axis (true of an RNN's
(h, c) and of a Transformer's per-layer key/value cache), so tiling and reordering beams are one
`jax.tree.map` each. A model may instead keep its beams' caches where they were written and
follow them through a table (`init_beam_cache` / `reorder_cache`: the Transformer, whose
self-attention cache is too large to copy at every step; see `Transformer.reorder_cache`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flax_s2s.models import Seq2Seq
from flax_s2s.special_tokens import DEFAULT_SPECIAL_TOKENS, SpecialTokens

Array = jax.Array
Decoded = tuple[Array, Array, Array]  # tokens, lengths, scores


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


def _compiled_once(*static_argnames: str) -> Callable[[Callable], Callable]:
    """`jax.jit` with `static_argnames`, called with every argument positional, defaults filled
    in and numbers as 32-bit arrays.

    jax.jit keys its cache on how a call passes its arguments: `f(x, 6)`, `f(x, n=6)` and a
    default left out are separate entries, each compiled anew, as are 0.5 and np.float32(0.5).
    Normalising the call first gives one compilation per shape, however callers spell it.
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
            return jitted(*(
                value if i in static_argnums else _as_array(value, defaults[i])
                for i, value in enumerate(bound.args)
            ))

        call.jitted = jitted  # for .lower(), cache inspection
        return call

    return decorate


def _as_array(value: Any, default: Any) -> Any:
    """A Python or NumPy number as an int32 / float32 array, typed like the parameter's default
    (so alpha=1 and alpha=0.6 share a compilation); anything else unchanged."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return value
    is_integer = isinstance(default if default is not inspect.Parameter.empty else value,
                            (int, np.integer))
    return jnp.asarray(value, jnp.int32 if is_integer else jnp.float32)


# --- greedy and sampling: one token per row and step ---


def _decode_one_per_step(
    model: Seq2Seq,
    variables: Any,
    src_tokens: Array,
    max_len: int,
    choose: Callable[[Array, Array], Array],
    min_len: Array | int = 0,
) -> Decoded:
    """A `lax.while_loop` that stops once every row has emitted EOS or `max_len` tokens.

    `choose(log_probs [batch, vocab], position)` picks the next tokens [batch]; it sees EOS at
    -inf before `min_len`. Scores add the chosen tokens' unmasked log-probabilities.
    """
    batch, specials = src_tokens.shape[0], model.special_tokens
    encoded = model.encode(variables, src_tokens)
    cache = model.init_cache(variables, encoded, max_len)
    init = (
        jnp.asarray(0),
        jnp.full((batch, max_len), specials.pad, jnp.int32),
        jnp.full((batch,), specials.bos, jnp.int32),
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
        log_probs = output_log_probs(logits, specials)
        allowed = forbid_early_eos(log_probs, position, min_len, specials.eos)
        next_tokens = choose(allowed, position).astype(jnp.int32)
        chosen = jnp.take_along_axis(log_probs, next_tokens[:, None], axis=-1)[:, 0]
        next_tokens = jnp.where(finished, specials.pad, next_tokens)
        scores = scores + jnp.where(finished, 0.0, chosen)
        tokens = tokens.at[:, position].set(next_tokens)
        finished = finished | (next_tokens == specials.eos)
        return position + 1, tokens, next_tokens, finished, scores, cache

    _, tokens, _, _, scores, _ = jax.lax.while_loop(cond, body, init)
    return tokens, sequence_lengths(tokens, specials.pad), scores


@_compiled_once("model", "max_len")
def greedy(
    model: Seq2Seq, variables: Any, src_tokens: Array, max_len: int, min_len: int = 0
) -> Decoded:
    """Argmax decoding.

    Args:
      model: the seam adapter (static: hashable), with its `special_tokens`.
      variables: the model's variable dict ({"params": ...}).
      src_tokens: [batch, src_len] int32, PAD-padded.
      max_len: the most tokens to emit per sequence (static), EOS included.
      min_len: the fewest tokens before EOS (traced: changing it does not recompile).

    Returns:
      tokens [batch, max_len], lengths [batch], scores [batch] (sum of log-probabilities).
    """
    return _decode_one_per_step(
        model, variables, src_tokens, max_len, lambda log_probs, _: jnp.argmax(log_probs, -1),
        min_len,
    )


def sampling_logits(log_probs: Array, temperature: Array | float, top_k: Array | int,
                    top_p: Array | float) -> Array:
    """The logits `sample` draws from: log_probs / temperature, then all but the `top_k` most
    likely tokens masked (0: keep all), then top-p (nucleus) truncation: keep the fewest most
    likely tokens whose probability (after temperature and top-k) adds up to >= top_p. Tokens
    tied with the last kept one are kept too. [batch, vocab] -> [batch, vocab], -inf = dropped.

    Temperature must be > 0 here; `sample` treats temperature 0 as argmax.
    """
    logits = log_probs / temperature
    ranked = -jnp.sort(-logits, axis=-1)  # descending
    vocab = logits.shape[-1]
    # top_k is traced (no recompile per value), so the cut-off is read from the sorted logits
    # rather than taken with lax.top_k, whose k must be static.
    kth = jnp.take_along_axis(ranked, jnp.clip(top_k - 1, 0, vocab - 1)[None, None], -1)
    logits = jnp.where((top_k > 0) & (logits < kth), -jnp.inf, logits)
    ranked = jnp.where((top_k > 0) & (ranked < kth), -jnp.inf, ranked)
    probs = jax.nn.softmax(ranked, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs  # probability of the more likely tokens
    smallest_kept = jnp.where(mass_before < top_p, ranked, jnp.inf).min(-1, keepdims=True)
    return jnp.where(logits < smallest_kept, -jnp.inf, logits)


@_compiled_once("model", "max_len")
def sample(
    model: Seq2Seq,
    variables: Any,
    src_tokens: Array,
    max_len: int,
    rng: Array,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_len: int = 0,
) -> Decoded:
    """Ancestral sampling with temperature, top-k and top-p (nucleus) truncation.

    Args:
      src_tokens: [batch, src_len] int32; max_len: static, as in `greedy`.
      rng: a PRNG key; step t draws with fold_in(rng, t), so a fixed key gives fixed outputs for
        a fixed batch (the draws of a row depend on the batch shape, not on the other rows).
        Or one key per row ([batch] keys, e.g. from `jax.random.split`): row r then draws with
        fold_in(rng[r], t), whatever its place in the batch.
      temperature: > 0 divides the log-probabilities; 0 means argmax (greedy).
      top_k: keep the k most likely tokens (0: all). top_p: nucleus mass in (0, 1] (1: all).
        See `sampling_logits`; top-k applies before top-p.
      min_len: the fewest tokens before EOS; EOS is dropped before the truncations (traced).

    Returns:
      tokens [batch, max_len], lengths [batch], and scores [batch]: the sum of the emitted
      tokens' log-probabilities under the model, before temperature and truncation.
    """

    def choose(log_probs, position):
        safe_temperature = jnp.where(temperature > 0, temperature, 1.0)
        logits = sampling_logits(log_probs, safe_temperature, top_k, top_p)
        drawn = _draw(rng, position, logits)
        return jnp.where(temperature > 0, drawn, jnp.argmax(log_probs, -1))

    return _decode_one_per_step(model, variables, src_tokens, max_len, choose, min_len)


def _is_key_batch(rng: Array) -> bool:
    """Whether `rng` holds one PRNG key per row: [batch] typed keys or [batch, 2] raw ones."""
    typed = jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
    return rng.ndim == (1 if typed else 2)


def _draw(rng: Array, position: Array, logits: Array) -> Array:
    """One token per row from logits [batch, vocab] at step `position`: with fold_in(rng,
    position) for the whole batch, or fold_in(rng[r], position) for row r of a key batch."""
    if _is_key_batch(rng):
        return jax.vmap(
            lambda key, row: jax.random.categorical(jax.random.fold_in(key, position), row)
        )(rng, logits)
    return jax.random.categorical(jax.random.fold_in(rng, position), logits, axis=-1)


# --- beam search ---


class _Beams(NamedTuple):
    """Beam-search loop state; -inf marks an empty slot (a beam or hypothesis not yet found)."""

    position: Array  # scalar: tokens emitted so far
    live_tokens: Array  # [batch, beam, max_len] prefixes still growing (no EOS)
    live_log_probs: Array  # [batch, beam] log p(prefix)
    finished_tokens: Array  # [batch, beam, max_len] ended by EOS or by max_len, best first
    finished_scores: Array  # [batch, beam] log p / length_penalty
    cache: Any  # decoder cache of the live beams, leaves [batch * beam, ...]


def _gather_beams(x: Array, beam_indices: Array) -> Array:
    """x [batch, beams, ...], beam_indices [batch, n] -> [batch, n, ...]."""
    return x[jnp.arange(x.shape[0])[:, None], beam_indices]


def _best(scores: Array, tokens: Array, n: int) -> tuple[Array, Array]:
    """The n best of scores [batch, m] with their tokens [batch, m, max_len], best first.
    On ties lax.top_k prefers the lower index, so hypotheses found earlier stay."""
    best_scores, indices = jax.lax.top_k(scores, n)
    return best_scores, _gather_beams(tokens, indices)


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


@_compiled_once("model", "beam_size", "max_len")
def beam_search(
    model: Seq2Seq,
    variables: Any,
    src_tokens: Array,
    beam_size: int,
    max_len: int,
    alpha: float = 0.6,
    min_len: int = 0,
) -> Decoded:
    """Beam search with the GNMT length penalty, all inputs of a batch at once.

    Each step extends the `beam_size` live prefixes of every input by every token and ranks the
    candidates by log-probability. Candidates ending in EOS that rank among the `beam_size` best
    leave the beam for the finished set (so beam_size 1 with alpha 0 is exactly greedy); the best
    `beam_size` candidates not ending in EOS stay live. At `max_len` the best candidates finish
    truncated. Finished hypotheses are ranked by log p / length_penalty(length, alpha) and the
    best `beam_size` kept.

    The loop stops early when, for every input, `beam_size` hypotheses are finished and none can
    be beaten. This rule is exact, not a heuristic: log-probabilities only fall as a prefix grows,
    so no extension of a live prefix scores above best_live_log_prob / max length_penalty over
    the lengths still reachable (valid for any sign of alpha); once the worst kept hypothesis is
    at least that, running on to `max_len` would return the same hypotheses.

    Args:
      model, variables: as in `greedy`.
      src_tokens: [batch, src_len] int32, PAD-padded.
      beam_size: live prefixes and returned hypotheses per input (static).
      max_len: the most tokens per hypothesis, EOS included (static).
      alpha: length-penalty exponent; 0 ranks by log-probability alone, larger favours longer
        hypotheses (traced: changing it does not recompile).
      min_len: the fewest tokens before EOS (traced). The early stop stays exact: forbidding
        EOS only removes candidates, and the bound already covers every reachable length.

    Returns:
      tokens [batch, beam_size, max_len], lengths [batch, beam_size], scores [batch, beam_size],
      best first. When fewer than `beam_size` distinct hypotheses exist, the rest score -inf.
    """
    batch, specials = src_tokens.shape[0], model.special_tokens
    encoded = model.encode(variables, src_tokens)
    # Beam b of input i is row i * beam_size + b of every encoded and cache leaf.
    encoded = jax.tree.map(lambda x: jnp.repeat(x, beam_size, axis=0), encoded)
    empty = jnp.full((batch, beam_size), -jnp.inf)
    init = _Beams(
        position=jnp.asarray(0),
        live_tokens=jnp.full((batch, beam_size, max_len), specials.pad, jnp.int32),
        # One live prefix (BOS) per input; identical copies would fill the beam with duplicates.
        live_log_probs=empty.at[:, 0].set(0.0),
        finished_tokens=jnp.full((batch, beam_size, max_len), specials.pad, jnp.int32),
        finished_scores=empty,
        cache=_beam_cache(model, variables, encoded, max_len, beam_size),
    )

    def cond(beams: _Beams) -> Array:
        reachable = jnp.maximum(length_penalty(beams.position + 1, alpha),
                                length_penalty(max_len, alpha))
        best_possible = beams.live_log_probs.max(-1) / reachable
        worst_kept = beams.finished_scores.min(-1)  # -inf while a slot is empty
        return (beams.position < max_len) & ~jnp.all(worst_kept >= best_possible)

    def body(beams: _Beams) -> _Beams:
        position = beams.position
        prev_tokens = jnp.where(
            position == 0, specials.bos, beams.live_tokens[:, :, jnp.maximum(position - 1, 0)]
        )
        logits, cache = model.step(
            variables, encoded, beams.cache, prev_tokens.reshape(-1), position
        )
        log_probs = output_log_probs(logits, specials).reshape(batch, beam_size, -1)
        log_probs = forbid_early_eos(log_probs, position, min_len, specials.eos)
        vocab = log_probs.shape[-1]
        candidates = beams.live_log_probs[:, :, None] + log_probs  # [batch, beam, vocab]

        def extend(flat_indices):  # [batch, n] indices into beam * vocab -> tokens [b, n, len]
            prefixes = _gather_beams(beams.live_tokens, flat_indices // vocab)
            return prefixes.at[:, :, position].set(flat_indices % vocab)

        # Finished: the top candidates that end in EOS, or all of them at max_len.
        top_log_probs, top_indices = jax.lax.top_k(candidates.reshape(batch, -1), beam_size)
        ends = (top_indices % vocab == specials.eos) | (position + 1 == max_len)
        new_scores = jnp.where(ends, top_log_probs / length_penalty(position + 1, alpha), -jnp.inf)
        finished_scores, finished_tokens = _best(
            jnp.concatenate([beams.finished_scores, new_scores], axis=1),
            jnp.concatenate([beams.finished_tokens, extend(top_indices)], axis=1),
            beam_size,
        )

        # Live: the best candidates that do not end in EOS; their caches follow them.
        not_eos = jnp.where(jnp.arange(vocab) == specials.eos, -jnp.inf, candidates)
        live_log_probs, live_indices = jax.lax.top_k(not_eos.reshape(batch, -1), beam_size)
        rows = (jnp.arange(batch)[:, None] * beam_size + live_indices // vocab).reshape(-1)
        return _Beams(
            position=position + 1,
            live_tokens=extend(live_indices),
            live_log_probs=live_log_probs,
            finished_tokens=finished_tokens,
            finished_scores=finished_scores,
            cache=_reorder(model, cache, rows),
        )

    final = jax.lax.while_loop(cond, body, init)
    tokens = final.finished_tokens
    return tokens, sequence_lengths(tokens, specials.pad), final.finished_scores


def best_sequences(
    model: Seq2Seq,
    variables: Any,
    src_tokens: Array,
    max_len: int,
    beam_size: int = 0,
    alpha: float = 0.6,
    min_len: int = 0,
) -> Array:
    """The one output per input that free-running evaluation scores: greedy when beam_size is 0,
    else the best beam-search hypothesis. [batch, src_len] -> tokens [batch, max_len]."""
    if beam_size == 0:
        return greedy(model, variables, src_tokens, max_len=max_len, min_len=min_len)[0]
    tokens, _, _ = beam_search(
        model, variables, src_tokens, beam_size=beam_size, max_len=max_len, alpha=alpha,
        min_len=min_len,
    )
    return tokens[:, 0]
