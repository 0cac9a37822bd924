"""Greedy decoding and ancestral sampling: one token per row and step, in a `lax.while_loop` that
stops once every row has ended (EOS, its length limit, or max_len)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from flax_s2s.decoding.arguments import prepare_search
from flax_s2s.decoding.compiled import _compiled_once
from flax_s2s.decoding.controls import Controls, make_controls, next_log_probs
from flax_s2s.decoding.sampling import draw, sampling_logits
from flax_s2s.decoding.scores import sequence_lengths
from flax_s2s.models import Seq2Seq

Array = jax.Array
Decoded = tuple[Array, Array, Array]  # tokens, lengths, scores


def _decode_one_per_step(
    model: Seq2Seq,
    variables: Any,
    src_tokens: Array,
    max_len: int,
    choose: Callable[[Array, Array], Array],
    controls: Controls,
) -> Decoded:
    """The loop of `greedy` and `sample`.

    `choose(log_probs [batch, vocab], position)` picks the next tokens [batch] from the
    log-probabilities the controls leave (`controls.next_log_probs`: -inf where a token may not
    come). Scores add the chosen tokens' log-probabilities under the model.
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
        log_probs, allowed = next_log_probs(logits, tokens, position, controls, specials)
        next_tokens = choose(allowed, position).astype(jnp.int32)
        chosen = jnp.take_along_axis(log_probs, next_tokens[:, None], axis=-1)[:, 0]
        # A row whose every token the controls ban ends here, as at its length limit.
        finished = finished | ~jnp.isfinite(allowed).any(-1)
        next_tokens = jnp.where(finished, specials.pad, next_tokens)
        scores = scores + jnp.where(finished, 0.0, chosen)
        tokens = tokens.at[:, position].set(next_tokens)
        finished = finished | (next_tokens == specials.eos) | (position + 1 >= controls.limits)
        return position + 1, tokens, next_tokens, finished, scores, cache

    _, tokens, _, _, scores, _ = jax.lax.while_loop(cond, body, init)
    return tokens, sequence_lengths(tokens, specials.pad), scores


@_compiled_once("model", "max_len", prepare=prepare_search)
def greedy(
    model: Seq2Seq,
    variables: Any,
    src_tokens: Array,
    max_len: int,
    min_len: int = 0,
    no_repeat_ngram_size: int = 0,
    repetition_penalty: float = 1.0,
    prefix: Array | None = None,
    max_len_a: float = 0.0,
    max_len_b: float = 0.0,
    forced_bos: int = -1,
) -> Decoded:
    """Argmax decoding.

    Args:
      model: the seam adapter (static: hashable), with its `special_tokens`.
      variables: the model's variable dict ({"params": ...}).
      src_tokens: [batch, src_len] int32, PAD-padded.
      max_len: the most tokens to emit per sequence (static), EOS included.
      min_len: the fewest tokens before EOS (traced: changing it does not recompile).
      no_repeat_ngram_size, repetition_penalty, prefix, max_len_a, max_len_b: the generation
        controls (traced; docs/decoding.md): 0 or n: no n-gram twice in an output; 1 or the
        CTRL penalty on the logits of tokens already emitted; None or tokens [batch, prefix_len]
        (PAD after each row's) that every output starts with; each row ends by
        floor(a * source length + b) tokens (both 0: max_len).
      forced_bos: -1, or the id every output starts with, before any prefix (mBART's target
        language code, as the reference's forced_bos_token_id); folded into the prefix, so its
        log-probability counts in the score.

    Returns:
      tokens [batch, max_len], lengths [batch], scores [batch] (sum of the model's
      log-probabilities of the emitted tokens, the prefix's included).
    """
    controls = make_controls(model.special_tokens, src_tokens, max_len, min_len,
                             no_repeat_ngram_size, repetition_penalty, prefix, max_len_a,
                             max_len_b)
    return _decode_one_per_step(
        model, variables, src_tokens, max_len, lambda log_probs, _: jnp.argmax(log_probs, -1),
        controls,
    )


@_compiled_once("model", "max_len", prepare=prepare_search)
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
    no_repeat_ngram_size: int = 0,
    repetition_penalty: float = 1.0,
    prefix: Array | None = None,
    max_len_a: float = 0.0,
    max_len_b: float = 0.0,
    forced_bos: int = -1,
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
      no_repeat_ngram_size, repetition_penalty, prefix, max_len_a, max_len_b, forced_bos: as
        in `greedy`; they shape the distribution before temperature and truncation.

    Returns:
      tokens [batch, max_len], lengths [batch], and scores [batch]: the sum of the emitted
      tokens' log-probabilities under the model, before the controls, temperature and
      truncation.
    """

    def choose(log_probs, position):
        safe_temperature = jnp.where(temperature > 0, temperature, 1.0)
        logits = sampling_logits(log_probs, safe_temperature, top_k, top_p)
        drawn = draw(rng, position, logits)
        return jnp.where(temperature > 0, drawn, jnp.argmax(log_probs, -1))

    controls = make_controls(model.special_tokens, src_tokens, max_len, min_len,
                             no_repeat_ngram_size, repetition_penalty, prefix, max_len_a,
                             max_len_b)
    return _decode_one_per_step(model, variables, src_tokens, max_len, choose, controls)
