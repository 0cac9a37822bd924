"""Minimum risk training (`config.mrt`): a sequence-level loss mixed with the token loss
(Shen et al. 2016; Edunov et al. 2018).

Per example, `num_candidates` = k outputs are drawn from the model itself, without gradient
(`candidates="sample"`: ancestral sampling at temperature 1; `"beam"`: the k hypotheses of a
beam search of width k), in eval mode (no dropout), inside the jitted train step. With
`include_reference` the reference is added as candidate k + 1. Candidates equal to an earlier
one are dropped, so the candidate set S is a set, as in Shen et al. Each candidate c is scored
with teacher forcing on its own tokens (train mode, with gradient): log p(c) is the sum of its
tokens' log-probabilities, EOS included. The renormalised candidate distribution and the risk:

    q(c) = softmax over c in S of alpha * log p(c),    risk = sum_c q(c) * cost(c, reference)

`alpha` scales sentence log-probability sums (not per-token means): alpha = 1 renormalises the
model's own probabilities over S, smaller values flatten q (Shen et al. use 5e-3 with S = 100
samples on long sentences). The cost compares the candidate's and the reference's tokens
before EOS (`flax_s2s.sequence_costs`, computed inside the jitted step): `"edit"`, the
Levenshtein distance divided by the reference's length (the expected edit rate: PER / WER on
symbol tasks; above 1 for long wrong candidates); `"bleu"`, 1 - sentence BLEU over tokens
(4-grams, add-one smoothing for n > 1); `"chrf"`, 1 - chrF over tokens (6-grams, beta 2).

The step's loss mixes the two convexly, (1 - weight) * token cross-entropy + weight * risk,
each the mean over the batch's target tokens (a row's risk counts once per reference token), as
Edunov et al. weight the token loss and the risk; weight 1 is pure MRT, which alone lets the
model drift from the reference's likelihood.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from flax_s2s import config_checks, decoding, sequence_costs
from flax_s2s.errors import ConfigError
from flax_s2s.models import Seq2Seq, decoder_inputs

Array = jax.Array
COSTS = tuple(sequence_costs.COSTS)  # "edit", "bleu", "chrf"
CANDIDATES = ("sample", "beam")
# Folded into the step's key: the candidates' draws, and the scoring pass's dropout.
_SAMPLE_STREAM, _SCORE_STREAM = 0x3127, 0x3128


def distinct(candidates: Array, valid: Array) -> Array:
    """bool [batch, k]: `valid` [batch, k] and unequal to every earlier valid candidate of its
    row (candidates [batch, k, len], compared token by token)."""
    same = (candidates[:, :, None, :] == candidates[:, None, :, :]).all(-1)  # [batch, k, k]
    k = candidates.shape[1]
    earlier = jnp.tril(jnp.ones((k, k), bool), -1)  # [c, c']: c' < c
    repeated = (same & earlier & valid[:, None, :]).any(-1)
    return valid & ~repeated


def sequence_log_probs(logits: Array, tokens: Array, pad: int) -> Array:
    """float32 [...]: sum over non-PAD positions of log softmax(logits)[token], for logits
    [..., len, vocab] of tokens [..., len] (the teacher-forced pass on those tokens)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    chosen = jnp.take_along_axis(log_probs, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.where(tokens != pad, chosen, 0.0).sum(-1)


def expected_risk(log_probs: Array, costs: Array, valid: Array, alpha: float) -> Array:
    """float32 [batch]: sum_c q(c) cost(c), q = softmax of alpha * log_probs [batch, k] over the
    `valid` [batch, k] candidates (each row needs one)."""
    scaled = jnp.where(valid, alpha * log_probs, -jnp.inf)
    q = jax.nn.softmax(scaled, axis=-1)
    return jnp.where(valid, q * costs, 0.0).sum(-1)


def draw_candidates(
    model: Seq2Seq, variables: Any, src_tokens: Array, max_len: int, rng: Array,
    num_candidates: int, how: str,
) -> tuple[Array, Array]:
    """(tokens int32 [batch, k, max_len] (PAD after EOS), bool [batch, k]: a real hypothesis)
    from the model in eval mode, without gradient: ancestral samples, or the k hypotheses of a
    beam search of width k (ranked by log-probability; fewer when fewer exist)."""
    variables = jax.lax.stop_gradient(variables)
    batch, k = src_tokens.shape[0], num_candidates
    if how == "beam":
        tokens, _, scores = decoding.beam_search(model, variables, src_tokens, k, max_len, 0.0)
        return tokens, jnp.isfinite(scores)
    tiled = jnp.repeat(src_tokens, k, axis=0)
    tokens, _, _ = decoding.sample(model, variables, tiled, max_len, rng)
    return tokens.reshape(batch, k, max_len), jnp.ones((batch, k), bool)


def candidate_risk(
    model: Seq2Seq, variables: Any, encoded: Any, candidates: Array, valid: Array,
    tgt_tokens: Array, settings: ml_collections.ConfigDict, rng: Array | None = None,
) -> Array:
    """float32 [batch]: the risk of given candidates [batch, k, len] (`valid` [batch, k]), each
    scored by the model's teacher-forced `forward` on its own tokens (train mode, dropout from
    `rng`), `encoded` being the batch's encoder output; differentiable in `variables`."""
    batch, k, length = candidates.shape
    specials = model.special_tokens
    valid = distinct(candidates, valid)
    tiled = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), encoded)
    flat = candidates.reshape(batch * k, length)
    logits = model.forward(variables, tiled, decoder_inputs(flat, specials.bos), train=True,
                           rng=rng)
    log_probs = sequence_log_probs(logits, flat, specials.pad).reshape(batch, k)
    costs = sequence_costs.COSTS[settings.cost](candidates, tgt_tokens, specials.eos, specials.pad)
    return expected_risk(log_probs, costs, valid, settings.alpha)


def risk_sum(
    model: Seq2Seq, variables: Any, encoded: Any, batch: dict[str, Array], rng: Array,
    settings: ml_collections.ConfigDict, max_len: int,
) -> Array:
    """The batch's risk summed over its reference tokens: sum over rows of risk * the row's
    non-PAD targets, so that dividing by the batch's tokens (as the train step divides the
    token loss) gives the token-weighted mean risk. Candidates of `max_len` tokens are drawn
    from fold_in(rng, ·) streams of their own (`draw_candidates`)."""
    tgt_tokens = batch["tgt_tokens"].astype(jnp.int32)
    candidates, valid = draw_candidates(
        model, variables, batch["src_tokens"], max_len,
        jax.random.fold_in(rng, _SAMPLE_STREAM), settings.num_candidates, settings.candidates,
    )
    reference = jnp.pad(tgt_tokens, ((0, 0), (0, max_len - tgt_tokens.shape[1])),
                        constant_values=model.special_tokens.pad)
    if settings.include_reference:
        candidates = jnp.concatenate([candidates, reference[:, None]], axis=1)
        valid = jnp.concatenate([valid, jnp.ones_like(valid[:, :1])], axis=1)
    risk = candidate_risk(model, variables, encoded, candidates, valid, reference, settings,
                          jax.random.fold_in(rng, _SCORE_STREAM))
    tokens = (tgt_tokens != model.special_tokens.pad).sum(1)
    return (risk * tokens).sum()


def check_config(config: ml_collections.ConfigDict) -> None:
    """`config.mrt`: weight in [0, 1] (0: off), num_candidates >= 1, alpha > 0, cost among
    `COSTS`, candidates among `CANDIDATES`, include_reference a bool; with a weight, unpacked rows
    and a model without BatchNorm."""
    mrt = config.mrt
    config_checks.fraction(config, "mrt.weight", note=" (0: off)", closed=True)
    config_checks.positive(config, "mrt.num_candidates")
    config_checks.positive(config, "mrt.alpha")
    config_checks.one_of(config, "mrt.cost", COSTS)
    config_checks.one_of(config, "mrt.candidates", CANDIDATES)
    if not isinstance(mrt.include_reference, bool):
        raise ConfigError(f"config.mrt.include_reference={mrt.include_reference!r}: must be "
                          "True or False")
    if mrt.weight <= 0:
        return
    if config.pack:
        raise ConfigError(f"config.mrt.weight={mrt.weight} compares each row with one reference: "
                          "it trains on unpacked rows (config.pack=False)")
    if config.model.get("norm") == "batch":
        raise ConfigError(f"config.mrt.weight={mrt.weight}: the candidates' scoring pass would "
                          "move the BatchNorm statistics a second time; config.model.norm='batch' "
                          "trains without minimum risk training")
