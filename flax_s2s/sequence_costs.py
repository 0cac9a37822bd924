"""Sentence costs of candidate outputs against their reference, on token ids, in JAX.

Every cost takes candidates int [batch, k, len] and references int [batch, len_ref], compares
each row up to its first EOS or PAD (its symbols; tokens after them are never read), and
returns float32 [batch, k], 0 for a candidate whose symbols equal the reference's. Static
shapes and no Python loop over positions, so the costs run inside a jitted train step (the
evaluation scores and MBR use sacrebleu on decoded strings, `flax_s2s.metrics`; on tokens as
words, BLEU here equals its add-one sentence BLEU and chrF its chrF with tokens as characters).

- `edit`: Levenshtein distance / the reference's length (at least 1); above 1 for long wrong
  candidates.
- `bleu`: 1 - sentence BLEU over tokens: n = 1..4 clipped n-gram precisions p_n, geometric mean,
  brevity penalty BP = min(1, exp(1 - r / c)) for candidate and reference lengths c, r.
  Smoothing: add one to the matches and to the candidate's n-grams for n > 1 (Lin & Och 2004,
  "smoothing 2" of Chen & Cherry 2014), p_1 unsmoothed; so an order longer than the candidate
  has p_n = 1 / 1 = 1, a candidate sharing no token with the reference costs 1, and an empty
  candidate costs 1 (p_1 = 0 / 0 counts as 0), unless the reference is empty too (cost 0).
- `chrf`: 1 - chrF (Popović 2015) over tokens as its symbols, n = 1..6, beta = 2: for each order
  n, precision P_n = matches / candidate n-grams and recall R_n = matches / reference n-grams;
  P and R are their means over the orders both sequences are long enough to have (as sacrebleu
  averages over the orders with counts; an order longer than either sequence is left out, not
  counted as 0), and chrF = (1 + beta^2) P R / (beta^2 P + R), 0 when P = R = 0. With no such
  order (an empty side) the cost is 1, or 0 when both are empty.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
BLEU_ORDER, CHRF_ORDER, CHRF_BETA = 4, 6, 2.0


def symbol_lengths(tokens: Array, eos: int, pad: int) -> Array:
    """int32 [...]: the tokens before the first EOS or PAD of each row of tokens [..., len]."""
    ended = jnp.cumsum((tokens == eos) | (tokens == pad), axis=-1) > 0
    return (~ended).sum(-1).astype(jnp.int32)


def edit_row(previous: Array, token: Array, b: Array) -> Array:
    """One row of the edit-distance table: the distances int32 [n, len_b + 1] of a prefix
    extended by `token` [n] to every prefix b[:, :j], from the prefix's row `previous`. The
    insertions along b (row[j] = min over i <= j of best[i] + j - i) by a cumulative minimum."""
    columns = jnp.arange(b.shape[1] + 1)
    substitute = previous[:, :-1] + (token[:, None] != b).astype(jnp.int32)
    best = jnp.minimum(jnp.concatenate([previous[:, :1] + 1, substitute], axis=1), previous + 1)
    return jax.lax.cummin(best - columns, axis=1) + columns


def edit_distances(a: Array, a_lengths: Array, b: Array, b_lengths: Array) -> Array:
    """Levenshtein distances int32 [n] between a[i, :a_lengths[i]] and b[i, :b_lengths[i]].

    a: int [n, len_a], b: int [n, len_b]. One `lax.scan` over a's tokens; each row of the table
    (a's prefix against every prefix of b) comes from the previous one in parallel, the
    insertions along b by a cumulative minimum. Tokens past a row's length are never read."""
    columns = jnp.arange(b.shape[1] + 1)
    first = jnp.broadcast_to(columns, (a.shape[0], b.shape[1] + 1)).astype(jnp.int32)

    def body(row, inputs):
        token, i = inputs
        return jnp.where((i < a_lengths)[:, None], edit_row(row, token, b), row), None

    steps = (a.T.astype(jnp.int32), jnp.arange(a.shape[1]))
    last, _ = jax.lax.scan(body, first, steps)
    return jnp.take_along_axis(last, b_lengths[:, None].astype(jnp.int32), axis=1)[:, 0]


def edit_costs(candidates: Array, reference: Array, eos: int, pad: int) -> Array:
    """float32 [batch, k]: edit distance / reference length (at least 1) of candidates
    [batch, k, len] against references [batch, len_ref], both compared up to their first EOS."""
    batch, k, _ = candidates.shape
    flat = candidates.reshape(batch * k, -1)
    ref = jnp.repeat(reference, k, axis=0)
    ref_lengths = symbol_lengths(ref, eos, pad)
    distances = edit_distances(flat, symbol_lengths(flat, eos, pad), ref, ref_lengths)
    return (distances / jnp.maximum(ref_lengths, 1)).reshape(batch, k).astype(jnp.float32)


def _shifted(same: Array, offset: int) -> Array:
    """same [..., m, n] moved up-left by `offset`: out[..., i, j] = same[..., i + o, j + o],
    False past the ends."""
    moved = same[..., offset:, offset:]
    widths = [(0, 0)] * (same.ndim - 2) + [(0, same.shape[-2] - moved.shape[-2]),
                                           (0, same.shape[-1] - moved.shape[-1])]
    return jnp.pad(moved, widths, constant_values=False)


def ngram_counts(
    candidates: Array, reference: Array, eos: int, pad: int, max_order: int,
) -> tuple[Array, Array, Array]:
    """(clipped matches, candidate n-grams, reference n-grams), each float32 [batch, k, max_order]
    (index n - 1 for order n), of candidates [batch, k, len] against references
    [batch, len_ref], both up to their first EOS or PAD.

    Clipped counts without hashing: for the candidate n-gram starting at position i, let
    m_r[i] = the reference positions starting the same n-gram and o_c[i] = the candidate
    positions j <= i starting it (i is its o_c[i]-th occurrence). A distinct n-gram g occurs at
    count_c(g) positions, with o_c = 1 .. count_c(g), and o_c[i] <= m_r[i] = count_r(g) holds
    at min(count_c(g), count_r(g)) of them, so the count of positions with o_c[i] <= m_r[i] is
    sum over distinct g of min(count_c(g), count_r(g)), the clipped matches. (The same sum as
    sum_i min(m_c[i], m_r[i]) / m_c[i] with m_c[i] all candidate positions of i's n-gram, but
    in integers, so a candidate equal to its reference costs exactly 0.) Equal n-grams come from
    token-equality tables, the table of order n being that of order n - 1 and the tokens
    n - 1 further on.
    """
    lengths = symbol_lengths(candidates, eos, pad)[..., None]  # [batch, k, 1]
    ref_lengths = symbol_lengths(reference, eos, pad)[:, None, None]  # [batch, 1, 1]
    same_c = candidates[..., :, None] == candidates[..., None, :]  # [batch, k, len, len]
    same_r = candidates[..., :, None] == reference[:, None, None, :]  # [batch, k, len, len_ref]
    starts_c, starts_r = jnp.arange(candidates.shape[-1]), jnp.arange(reference.shape[-1])
    not_later = starts_c[None, :] <= starts_c[:, None]  # [len, len]: j <= i
    grams_c, grams_r = same_c, same_r
    matches, hyp_grams, ref_grams = [], [], []
    for n in range(1, max_order + 1):  # orders, not positions: max_order traced copies
        if n > 1:
            grams_c = grams_c & _shifted(same_c, n - 1)
            grams_r = grams_r & _shifted(same_r, n - 1)
        valid_c = starts_c + n <= lengths  # [batch, k, len]: an n-gram starts at i
        valid_r = starts_r + n <= ref_lengths  # [batch, 1, len_ref]
        o_c = (grams_c & not_later & valid_c[..., None, :]).sum(-1)
        m_r = (grams_r & valid_r[..., None, :]).sum(-1)
        matches.append((valid_c & (o_c <= m_r)).sum(-1))
        hyp_grams.append(jnp.maximum(lengths[..., 0] - n + 1, 0))
        ref_grams.append(jnp.broadcast_to(jnp.maximum(ref_lengths[..., 0] - n + 1, 0),
                                          lengths.shape[:-1]))
    return tuple(jnp.stack(x, -1).astype(jnp.float32) for x in (matches, hyp_grams, ref_grams))


def bleu_costs(candidates: Array, reference: Array, eos: int, pad: int) -> Array:
    """float32 [batch, k]: 1 - sentence BLEU (4-grams, add-one smoothing for n > 1; see the
    module docstring) of candidates [batch, k, len] against references [batch, len_ref]."""
    matches, hyp, ref = ngram_counts(candidates, reference, eos, pad, BLEU_ORDER)
    p_1 = jnp.where(hyp[..., :1] > 0, matches[..., :1] / jnp.maximum(hyp[..., :1], 1.0), 0.0)
    precisions = jnp.concatenate([p_1, (matches[..., 1:] + 1.0) / (hyp[..., 1:] + 1.0)], -1)
    geometric = jnp.exp(jnp.log(precisions).mean(-1))  # 0 when p_1 = 0
    c, r = hyp[..., 0], ref[..., 0]  # the lengths
    brevity = jnp.where(c >= r, 1.0, jnp.exp(1.0 - r / jnp.maximum(c, 1.0)))
    bleu = jnp.where((c == 0) & (r == 0), 1.0, geometric * brevity)
    return (1.0 - bleu).astype(jnp.float32)


def chrf_costs(candidates: Array, reference: Array, eos: int, pad: int) -> Array:
    """float32 [batch, k]: 1 - chrF (token 6-grams, beta 2, means over the orders both sides
    have; see the module docstring) of candidates [batch, k, len] against references
    [batch, len_ref]."""
    matches, hyp, ref = ngram_counts(candidates, reference, eos, pad, CHRF_ORDER)
    orders = (hyp > 0) & (ref > 0)
    count = jnp.maximum(orders.sum(-1), 1)
    precision = jnp.where(orders, matches / jnp.maximum(hyp, 1.0), 0.0).sum(-1) / count
    recall = jnp.where(orders, matches / jnp.maximum(ref, 1.0), 0.0).sum(-1) / count
    factor = CHRF_BETA ** 2
    denominator = factor * precision + recall
    chrf = jnp.where(denominator > 0, (1 + factor) * precision * recall
                     / jnp.maximum(denominator, 1e-30), 0.0)
    both_empty = (hyp[..., 0] == 0) & (ref[..., 0] == 0)
    return (1.0 - jnp.where(both_empty, 1.0, chrf)).astype(jnp.float32)


COSTS: dict[str, Callable[[Array, Array, int, int], Array]] = {
    "edit": edit_costs, "bleu": bleu_costs, "chrf": chrf_costs}
