import contextlib
import dataclasses
import functools
import itertools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROLLED, ROOT, tiny_config
from decoding_references import reference_step

from configs import default
from flax_s2s import decoding, infer, training
from flax_s2s.data import decode_input
from flax_s2s.data.dialogue import fit_turns, join_turns
from flax_s2s.data.text_files import BadLine
from flax_s2s.data.vocab import BOS, EOS, PAD, SymbolVocab
from flax_s2s.errors import FileFormatError
from flax_s2s.models import build_model, decoder_inputs
from flax_s2s.special_tokens import SpecialTokens
from flax_s2s.training.config import ConfigError, validate_config
from flax_s2s.workdirs import TrainedModel, WorkdirError, load_workdir

VOCAB, MAX_LEN = 9, 6


@pytest.fixture(scope="module")
def random_model():
    config = default.get_config()
    config.model.update(emb_dim=8, hidden_dim=16, attention_dim=8)
    model = build_model(config, VOCAB, VOCAB)
    src = np.array([[4, 5, 6, 0], [7, 8, 0, 0], [4, 4, 4, 4], [8, 7, 6, 5], [5, 0, 0, 0]], np.int32)
    variables = model.init(jax.random.PRNGKey(1), src, np.zeros((5, MAX_LEN), np.int32))
    # Sharpen the output layer so that rows end at different steps (one never emits EOS).
    params = variables["params"]
    params["output_proj"]["kernel"] = params["output_proj"]["kernel"] * 8
    return model, {"params": params}, src


def _python_loop_greedy(model, variables, src, max_len, min_len=0):
    encoded = model.encode(variables, src)
    cache = model.init_cache(variables, encoded, max_len)
    prev = jnp.full((src.shape[0],), BOS)
    rows = [[] for _ in range(src.shape[0])]
    finished = [False] * src.shape[0]
    for position in range(max_len):
        logits, cache = model.step(variables, encoded, cache, prev, position)
        logits = np.asarray(logits).copy()
        logits[:, [PAD, BOS]] = -np.inf  # never emitted
        if position < min_len:
            logits[:, EOS] = -np.inf
        prev = jnp.argmax(logits, -1)
        for b, token in enumerate(np.asarray(prev).tolist()):
            rows[b].append(PAD if finished[b] else token)
            finished[b] = finished[b] or token == EOS
    return np.array(rows)


def test_greedy_while_loop_equals_python_loop_over_step(random_model):
    model, variables, src = random_model
    tokens, lengths, scores = decoding.greedy(model, variables, src, max_len=MAX_LEN)
    expected = _python_loop_greedy(model, variables, src, MAX_LEN)
    np.testing.assert_array_equal(np.asarray(tokens), expected)
    assert np.asarray(lengths).tolist() == [int((row != PAD).sum()) for row in expected]
    assert len(set(np.asarray(lengths).tolist())) == 3, "the case should mix early, late, no EOS"
    assert np.all(np.asarray(scores) <= 0)


@pytest.mark.parametrize("min_len", [2, 5])
def test_greedy_with_min_len_equals_python_loop_without_early_eos(random_model, min_len):
    model, variables, src = random_model
    tokens, lengths, _ = jax.device_get(
        decoding.greedy(model, variables, src, max_len=MAX_LEN, min_len=min_len)
    )
    np.testing.assert_array_equal(tokens, _python_loop_greedy(model, variables, src, MAX_LEN,
                                                              min_len))
    assert (lengths >= min(min_len + 1, MAX_LEN)).all()
    _, free_lengths, _ = decoding.greedy(model, variables, src, max_len=MAX_LEN)
    assert (np.asarray(free_lengths) <= min_len).any(), "the case should have short outputs"


def test_greedy_score_is_sum_of_chosen_log_probs(random_model):
    model, variables, src = random_model
    tokens, lengths, scores = decoding.greedy(model, variables, src, max_len=MAX_LEN)
    # teacher-force the decoded tokens and add up their log-probabilities
    logits = model.forward(variables, model.encode(variables, src), decoder_inputs(tokens))
    logits = np.asarray(logits).copy()
    logits[..., [PAD, BOS]] = -np.inf
    log_probs = np.asarray(jax.nn.log_softmax(logits))
    for b in range(src.shape[0]):
        n = int(lengths[b])
        expected = sum(log_probs[b, t, int(tokens[b, t])] for t in range(n))
        np.testing.assert_allclose(float(scores[b]), expected, rtol=1e-5, atol=1e-5)


# --- over the seam, for every model type build_model knows ---

TGT_VOCAB, SRC_VOCAB, SEARCH_LEN = 7, 9, 4
# Three real sources and one all-PAD row, as the last eval batch is padded.
SRC = np.array([[4, 5, 6, 0], [7, 8, 0, 0], [4, 4, 4, 4], [0, 0, 0, 0]], np.int32)
REAL_ROWS = 3
# Shrinks whichever of these sizes a model type's config has.
TINY_SIZES = {"emb_dim": 8, "hidden_dim": 16, "attention_dim": 8,  # LSTM
              "d_model": 16, "num_heads": 2, "mlp_dim": 32, "num_decoder_layers": 1}  # Transformer


def _model_types() -> list[str]:
    types = []
    for model_type in ("lstm", "transformer"):
        config = default.get_config()
        config.model.type = model_type
        try:
            build_model(config, SRC_VOCAB, TGT_VOCAB)
        except ValueError:  # not on this branch
            continue
        types.append(model_type)
    return types


def _tiny_model(model_type: str, tgt_vocab: int, seed: int = 1):
    config = default.get_config()
    config.model.type = model_type
    config.model.update({k: v for k, v in TINY_SIZES.items() if k in config.model})
    model = build_model(config, SRC_VOCAB, tgt_vocab)
    tgt = np.zeros((len(SRC), SEARCH_LEN), np.int32)
    variables = jax.jit(model.init)(jax.random.PRNGKey(seed), SRC, tgt)
    # Scaled-up weights give peaked, varied next-token distributions (at init they are nearly
    # uniform, which would make every hypothesis tie). The Transformer's unit-variance
    # embeddings already give varied distributions.
    scale = 3.0 if model_type == "lstm" else 1.0
    return model, jax.tree.map(lambda w: scale * w, variables)


@pytest.fixture(scope="module", params=_model_types())
def seam_model(request):
    return _tiny_model(request.param, TGT_VOCAB)


def _emittable(vocab: int) -> list[int]:
    return [t for t in range(vocab) if t not in (PAD, BOS)]


def _prefix_log_probs(model, variables, src_row, vocab, max_len):
    """{prefix: next-token log-probs [vocab]} for every prefix (no EOS) of up to max_len - 1
    tokens, read from the model's teacher-forced logits and normalised in NumPy."""
    sequences = np.array(list(itertools.product(_emittable(vocab), repeat=max_len)), np.int32)
    src = np.repeat(src_row[None], len(sequences), axis=0)
    logits = np.asarray(
        jax.jit(lambda v, s, t: model.forward(v, model.encode(v, s), t))(
            variables, src, decoder_inputs(sequences)
        ),
        np.float64,
    )
    logits[..., [PAD, BOS]] = -np.inf
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    table = {}
    for sequence, row in zip(sequences.tolist(), log_probs, strict=True):
        for t in range(max_len):
            table[tuple(sequence[:t])] = row[t]
    return table


def _penalty(length, alpha):
    return ((5 + length) / 6) ** alpha


def _score(table, hypothesis, alpha):
    log_prob = sum(table[hypothesis[:t]][token] for t, token in enumerate(hypothesis))
    return log_prob / _penalty(len(hypothesis), alpha)


def _all_hypotheses(vocab, max_len):
    """Every output a decoder can produce: n < max_len words then EOS, or max_len words."""
    words = [t for t in _emittable(vocab) if t != EOS]
    for n in range(max_len):
        yield from (prefix + (EOS,) for prefix in itertools.product(words, repeat=n))
    yield from itertools.product(words, repeat=max_len)


def _reference_beam_search(next_log_probs, vocab, beam_size, max_len, alpha, min_len=0):
    """Plain beam search, run to max_len without early stopping: each step keeps the beam_size
    best candidates; those ending in EOS (or all, at max_len) finish, and the beam_size best
    not ending in EOS stay live; EOS is no candidate before position min_len.
    `next_log_probs(prefix)` gives log-probs [vocab]. Returns [(hypothesis, score)], best first."""
    live, finished = [((), 0.0)], []
    for position in range(max_len):
        tokens = [t for t in _emittable(vocab) if t != EOS or position >= min_len]
        candidates = sorted(
            ((prefix + (token,), log_prob + next_log_probs(prefix)[token])
             for prefix, log_prob in live for token in tokens),
            key=lambda c: -c[1],
        )
        for hypothesis, log_prob in candidates[:beam_size]:
            if hypothesis[-1] == EOS or position + 1 == max_len:
                finished.append((hypothesis, log_prob / _penalty(len(hypothesis), alpha)))
        live = [c for c in candidates if c[0][-1] != EOS][:beam_size]
    return sorted(finished, key=lambda h: -h[1])[:beam_size]


def _hypothesis(tokens_row, length):
    return tuple(int(t) for t in tokens_row[: int(length)])


@pytest.fixture(scope="module")
def prefix_tables(seam_model):
    model, variables = seam_model
    return [_prefix_log_probs(model, variables, SRC[b], TGT_VOCAB, SEARCH_LEN)
            for b in range(REAL_ROWS)]


def test_beam_size_1_with_alpha_0_equals_greedy(seam_model):
    model, variables = seam_model
    tokens, lengths, scores = decoding.greedy(model, variables, SRC, max_len=SEARCH_LEN)
    beam_tokens, beam_lengths, beam_scores = decoding.beam_search(
        model, variables, SRC, beam_size=1, max_len=SEARCH_LEN, alpha=0.0
    )
    np.testing.assert_array_equal(beam_tokens[:, 0], tokens)
    np.testing.assert_array_equal(beam_lengths[:, 0], lengths)
    np.testing.assert_allclose(beam_scores[:, 0], scores, rtol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
@pytest.mark.parametrize("beam_size", [1, 2, 3])
def test_beam_search_equals_reference_beam_search(seam_model, prefix_tables, beam_size, alpha):
    """Also checks that stopping early is exact: the reference always runs to max_len.

    Scores agree to 1e-4: the reference tables come from the parallel forward pass, the search
    from step-by-step decoding (KV cache), which sums in another order in float32."""
    model, variables = seam_model
    tokens, lengths, scores = jax.device_get(decoding.beam_search(
        model, variables, SRC, beam_size=beam_size, max_len=SEARCH_LEN, alpha=alpha
    ))
    for b, table in enumerate(prefix_tables):
        expected = _reference_beam_search(table.get, TGT_VOCAB, beam_size, SEARCH_LEN, alpha)
        np.testing.assert_allclose(scores[b], [s for _, s in expected], rtol=1e-4, atol=1e-4)
        for k in range(beam_size):  # robust to ties: each returned hypothesis has its own score
            hypothesis = _hypothesis(tokens[b, k], lengths[b, k])
            np.testing.assert_allclose(scores[b, k], _score(table, hypothesis, alpha), rtol=1e-4,
                                       atol=1e-4)
            assert (tokens[b, k, lengths[b, k]:] == PAD).all()


def test_beam_cache_read_in_place_gives_the_logits_of_a_cache_gathered_by_beam(seam_model):
    """Steps under random beam reorders: a model whose beam cache stays in place (the
    Transformer, through its `origin` table) computes the logits that every leaf of the plain
    cache gathered by row gives; a model without one (the LSTM) gathers, as before."""
    model, variables = seam_model
    beams, length = 3, SEARCH_LEN
    src = np.repeat(SRC, beams, axis=0)  # row g * beams + slot, as beam search tiles
    encoded = model.encode(variables, src)
    kept = model.init_beam_cache(variables, encoded, length, beams)
    gathered = model.init_cache(variables, encoded, length)
    assert ("origin" in kept) == (model.module.__class__.__name__ == "Transformer")
    step = jax.jit(model.step)
    rng = np.random.default_rng(0)
    for position in range(length):
        tokens = jnp.asarray(rng.integers(3, TGT_VOCAB, len(src)), jnp.int32)
        kept_logits, kept = step(variables, encoded, kept, tokens, position)
        gathered_logits, gathered = step(variables, encoded, gathered, tokens, position)
        np.testing.assert_allclose(kept_logits, gathered_logits, rtol=1e-5, atol=1e-5)
        parents = rng.integers(0, beams, (len(SRC), beams))
        rows = (np.arange(len(SRC))[:, None] * beams + parents).reshape(-1)
        kept = model.reorder_cache(kept, rows)
        gathered = jax.tree.map(lambda leaf, rows=rows: leaf[rows], gathered)


def _content_length(hypothesis):
    """Tokens before EOS."""
    return len(hypothesis) - (hypothesis[-1] == EOS)


@pytest.mark.parametrize("alpha, min_len", [(0.0, 0), (0.6, 0), (0.6, 2)])
def test_exhaustive_beam_finds_every_hypothesis_in_brute_force_order(
    seam_model, prefix_tables, alpha, min_len
):
    """With min_len, the brute force keeps the outputs of at least min_len tokens before EOS,
    scored by the unconstrained model's teacher-forced log-probabilities."""
    model, variables = seam_model
    beam_size = 5**SEARCH_LEN  # more than the 341 hypotheses over 5 emittable tokens
    tokens, lengths, scores = jax.device_get(decoding.beam_search(
        model, variables, SRC, beam_size=beam_size, max_len=SEARCH_LEN, alpha=alpha,
        min_len=min_len,
    ))
    hypotheses = [h for h in _all_hypotheses(TGT_VOCAB, SEARCH_LEN) if _content_length(h) >= min_len]
    for b, table in enumerate(prefix_tables):
        expected = sorted((_score(table, h, alpha) for h in hypotheses), reverse=True)
        found = np.isfinite(scores[b])
        assert found.sum() == len(hypotheses)
        np.testing.assert_allclose(scores[b, found], expected, rtol=1e-4, atol=1e-4)
        returned = {_hypothesis(tokens[b, k], lengths[b, k]) for k in np.flatnonzero(found)}
        assert returned == set(hypotheses)
        best = _hypothesis(tokens[b, 0], lengths[b, 0])
        assert best == max(hypotheses, key=lambda h: _score(table, h, alpha))


@pytest.mark.parametrize("beam_size", [2, 3])
def test_beam_search_with_min_len_equals_reference_beam_search(seam_model, prefix_tables, beam_size):
    model, variables = seam_model
    min_len, alpha = 3, 0.6
    tokens, lengths, scores = jax.device_get(decoding.beam_search(
        model, variables, SRC, beam_size=beam_size, max_len=SEARCH_LEN, alpha=alpha,
        min_len=min_len,
    ))
    unconstrained = jax.device_get(decoding.beam_search(
        model, variables, SRC, beam_size=beam_size, max_len=SEARCH_LEN, alpha=alpha
    ))
    assert (unconstrained[1][:REAL_ROWS] <= min_len).any(), "the case should have short outputs"
    for b, table in enumerate(prefix_tables):
        expected = _reference_beam_search(table.get, TGT_VOCAB, beam_size, SEARCH_LEN, alpha,
                                          min_len)
        np.testing.assert_allclose(scores[b], [s for _, s in expected], rtol=1e-4, atol=1e-4)
        for k in range(beam_size):
            hypothesis = _hypothesis(tokens[b, k], lengths[b, k])
            assert _content_length(hypothesis) >= min_len
            np.testing.assert_allclose(scores[b, k], _score(table, hypothesis, alpha), rtol=1e-4,
                                       atol=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_best_is_between_greedy_and_the_optimum(seam_model, prefix_tables, alpha):
    """Beam search can in general prune the greedy path and end below greedy; on this model it
    does not, and it never beats the brute-force optimum (it returns real hypotheses)."""
    model, variables = seam_model
    tokens, lengths, scores = jax.device_get(
        decoding.greedy(model, variables, SRC, max_len=SEARCH_LEN)
    )
    greedy_scores = scores / _penalty(lengths, alpha)
    hypotheses = list(_all_hypotheses(TGT_VOCAB, SEARCH_LEN))
    for beam_size in (2, 3):
        _, _, beam_scores = decoding.beam_search(
            model, variables, SRC, beam_size=beam_size, max_len=SEARCH_LEN, alpha=alpha
        )
        for b, table in enumerate(prefix_tables):
            optimum = max(_score(table, h, alpha) for h in hypotheses)
            assert greedy_scores[b] - 1e-5 <= beam_scores[b, 0] <= optimum + 1e-5


# --- the length penalty, on a hand-built decoder ---

A, B = 3, 4  # the two words of the hand-built decoder (ids after the specials PAD, BOS, EOS)


@dataclasses.dataclass(frozen=True)
class MarkovDecoder:
    """The seam over a table: log p(next | position, previous token) = table[position, prev]."""

    special_tokens: SpecialTokens = SpecialTokens()

    def encode(self, variables, src_tokens):
        return {"src_tokens": src_tokens}

    def init_cache(self, variables, encoded, max_len):
        return jnp.zeros(encoded["src_tokens"].shape[0])  # nothing to remember

    def step(self, variables, encoded, cache, prev_tokens, position):
        return variables["table"][position, prev_tokens], cache


def _log_table(rows):
    """{(position, prev): {token: p}} -> log-prob table [4, 5, 5]; unlisted rows uniform over
    EOS, A, B; PAD and BOS never emitted."""
    table = np.zeros((4, 5, 5))
    table[:, :, [EOS, A, B]] = 1 / 3
    for (position, prev), probs in rows.items():
        table[position, prev] = 0.0
        table[position, prev, list(probs)] = list(probs.values())
    with np.errstate(divide="ignore"):
        return np.log(table).astype(np.float32)


def _markov_table():
    """Two likely outputs: "A EOS" (p = .5 * .9) and "B B B EOS" (p = .45 * .95 ** 3)."""
    return _log_table({
        (0, BOS): {A: 0.5, B: 0.45, EOS: 0.05},
        (1, A): {EOS: 0.9, A: 0.05, B: 0.05},
        (1, B): {B: 0.95, A: 0.025, EOS: 0.025},
        (2, B): {B: 0.95, A: 0.025, EOS: 0.025},
        (3, B): {EOS: 0.95, A: 0.025, B: 0.025},
    })


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_length_penalty_ranks_as_the_formula_says(alpha):
    table = _markov_table()
    short, long = (A, EOS), (B, B, B, EOS)
    log_p = {}
    for h in (short, long):
        previous = (BOS, *h[:-1])
        log_p[h] = sum(float(table[t, previous[t], token]) for t, token in enumerate(h))
    expected = {h: log_p[h] / ((5 + len(h)) / 6) ** alpha for h in (short, long)}
    ranked = sorted(expected, key=expected.get, reverse=True)
    # log p(short) > log p(long), but the penalty grows with length: alpha 1 puts long first.
    assert ranked == ([long, short] if alpha == 1.0 else [short, long])

    src = np.ones((1, 2), np.int32)
    tokens, lengths, scores = jax.device_get(decoding.beam_search(
        MarkovDecoder(), {"table": table}, src, beam_size=2, max_len=4, alpha=alpha
    ))
    assert [_hypothesis(tokens[0, k], lengths[0, k]) for k in range(2)] == ranked
    np.testing.assert_allclose(scores[0], [expected[h] for h in ranked], rtol=1e-6)


# --- sampling ---


def test_sampling_at_temperature_0_or_top_k_1_is_greedy(seam_model):
    model, variables = seam_model
    expected = jax.device_get(decoding.greedy(model, variables, SRC, max_len=SEARCH_LEN))
    rng = jax.random.PRNGKey(0)
    for settings in ({"temperature": 0.0}, {"temperature": 1e-6}, {"top_k": 1},
                     {"top_p": 1e-6, "temperature": 5.0}):
        got = jax.device_get(decoding.sample(model, variables, SRC, SEARCH_LEN, rng, **settings))
        np.testing.assert_array_equal(got[0], expected[0], err_msg=str(settings))
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_allclose(got[2], expected[2], rtol=1e-6)


def test_sampling_with_a_fixed_key_is_deterministic(seam_model):
    model, variables = seam_model
    # A high temperature, so that two keys cannot draw the same tokens by the model's certainty.
    draw = functools.partial(decoding.sample, model, variables, SRC, SEARCH_LEN, temperature=5.0)
    first, again = draw(jax.random.PRNGKey(3)), draw(jax.random.PRNGKey(3))
    jax.tree.map(np.testing.assert_array_equal, first, again)
    assert not np.array_equal(first[0], draw(jax.random.PRNGKey(4))[0])


def _truncated_softmax(log_probs, temperature, top_k, top_p):
    """NumPy: the distribution `sample` draws from (top-k, then nucleus, renormalised)."""
    logits = log_probs / temperature
    order = [t for t in np.argsort(-logits, kind="stable") if np.isfinite(logits[t])]
    if top_k:
        order = order[:top_k]
    probs = np.exp(logits[order] - logits[order].max())
    probs /= probs.sum()
    kept = np.searchsorted(np.cumsum(probs), top_p) + 1  # fewest tokens with mass >= top_p
    result = np.zeros_like(log_probs)
    result[order[:kept]] = probs[:kept] / probs[:kept].sum()
    return result


@pytest.mark.parametrize(
    "temperature, top_k, top_p", [(1.0, 0, 1.0), (0.7, 3, 1.0), (1.5, 0, 0.6), (1.0, 4, 0.85)]
)
def test_first_token_frequencies_match_the_truncated_softmax(
    seam_model, temperature, top_k, top_p
):
    model, variables = seam_model
    draws = 4000
    src = np.repeat(SRC[:1], draws, axis=0)
    tokens, _, _ = decoding.sample(
        model, variables, src, 1, jax.random.PRNGKey(7), temperature, top_k, top_p
    )
    counts = np.bincount(np.asarray(tokens[:, 0]), minlength=TGT_VOCAB)
    encoded = model.encode(variables, SRC[:1])
    logits, _ = model.step(variables, encoded, model.init_cache(variables, encoded, 1),
                           np.array([BOS]), 0)
    logits = np.asarray(logits[0], np.float64)
    logits[[PAD, BOS]] = -np.inf
    log_probs = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    expected = _truncated_softmax(log_probs, temperature, top_k, top_p)
    assert (expected > 0).sum() >= 2, "the case should leave a choice"
    if top_k or top_p < 1:
        assert (expected[_emittable(TGT_VOCAB)] == 0).any(), "the case should truncate"
    standard_error = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(counts / draws - expected) <= 3 * standard_error), (counts, expected)


# --- batching and compilation ---


def test_outputs_do_not_depend_on_the_rest_of_the_batch(seam_model):
    model, variables = seam_model
    alone = SRC[2:3]  # the same input decoded by itself and as row 2 of the padded batch
    for search in (
        functools.partial(decoding.greedy, max_len=SEARCH_LEN),
        functools.partial(decoding.beam_search, beam_size=3, max_len=SEARCH_LEN, alpha=0.6),
    ):
        in_batch = jax.device_get(search(model, variables, SRC))
        by_itself = jax.device_get(search(model, variables, alone))
        np.testing.assert_array_equal(by_itself[0][0], in_batch[0][2])
        np.testing.assert_array_equal(by_itself[1][0], in_batch[1][2])
        np.testing.assert_allclose(by_itself[2][0], in_batch[2][2], rtol=1e-5)


@contextlib.contextmanager
def _count_compiles():
    """Counts XLA compilations (jax.monitoring's backend-compile events) inside the block."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_second_call_with_new_values_does_not_recompile(seam_model):
    model, variables = seam_model
    other_variables = jax.tree.map(lambda w: w * 0.5, variables)
    other_src = SRC[::-1].copy()
    keys = jax.random.split(jax.random.PRNGKey(0))
    # (function, first call: keywords and defaults, second call: new values, all positional)
    calls = [
        (decoding.greedy, dict(max_len=SEARCH_LEN), (SEARCH_LEN,)),
        (decoding.sample, dict(max_len=SEARCH_LEN, rng=keys[0]),
         (SEARCH_LEN, keys[1], 0.5, 2, np.float32(0.9))),
        (decoding.beam_search, dict(beam_size=2, max_len=SEARCH_LEN), (2, SEARCH_LEN, 1)),
    ]
    for search, first, second in calls:
        jax.block_until_ready(search(model, variables, SRC, **first))
        with _count_compiles() as compiles:
            jax.block_until_ready(search(model, other_variables, other_src, *second))
        assert compiles == [], search.__name__
    with _count_compiles() as compiles:  # the counter does see a new shape compile
        jax.block_until_ready(decoding.greedy(model, variables, SRC[:2], max_len=SEARCH_LEN))
    assert compiles


def test_min_len_is_traced_and_no_output_ends_before_it(seam_model):
    """min_len 0 gives the unconstrained outputs; other values give no output shorter than
    min_len tokens before EOS, and none of them compiles anew."""
    model, variables = seam_model
    key = jax.random.PRNGKey(5)
    searches = {
        "greedy": functools.partial(decoding.greedy, max_len=SEARCH_LEN),
        "sample": functools.partial(decoding.sample, max_len=SEARCH_LEN, rng=key, temperature=2.0),
        "beam_search": functools.partial(decoding.beam_search, beam_size=3, max_len=SEARCH_LEN),
    }
    for name, search in searches.items():
        unconstrained = jax.device_get(search(model, variables, SRC))
        jitted = getattr(decoding, name).jitted
        cache_size = jitted._cache_size()
        with _count_compiles() as compiles:
            jax.tree.map(np.testing.assert_array_equal, unconstrained,
                         jax.device_get(search(model, variables, SRC, min_len=0)))
            for min_len in (1, 3):
                tokens, lengths, scores = jax.device_get(search(model, variables, SRC, min_len=min_len))
                ended = (tokens == EOS).any(-1)
                assert (np.where(ended, lengths, SEARCH_LEN) >= min_len + ended).all(), name
                assert np.isfinite(scores).all()
        assert compiles == [] and jitted._cache_size() == cache_size, name


def test_greedy_with_controls_over_a_real_model_equals_a_loop_over_its_step(seam_model):
    """The LSTM and the Transformer (its KV cache), step by step with the references."""
    model, variables = seam_model
    max_len, settings = SEARCH_LEN, {"no_repeat_ngram_size": 2, "repetition_penalty": 1.3}
    prefix = np.array([[4, 4], [0, 0], [5, 0], [0, 0]], np.int32)
    tokens, lengths, scores = jax.device_get(decoding.greedy(
        model, variables, SRC, max_len, prefix=prefix, **settings))
    free = jax.device_get(decoding.greedy(model, variables, SRC, max_len))[0]
    assert not np.array_equal(free, tokens), "the case should be changed by the controls"
    encoded = model.encode(variables, SRC)
    cache, step = model.init_cache(variables, encoded, max_len), jax.jit(model.step)
    forced = [tuple(t for t in row if t != PAD) for row in prefix]
    outputs, expected_scores = [() for _ in SRC], np.zeros(len(SRC))
    for position in range(max_len):
        previous = [output[-1] if output else BOS for output in outputs]
        logits, cache = step(variables, encoded, cache, jnp.array(previous), position)
        for row, output in enumerate(outputs):
            if output and output[-1] == EOS:
                continue
            lp, search = reference_step(np.asarray(logits[row]), output, position, settings,
                                        forced[row])
            outputs[row] = output + (int(np.argmax(search)),)
            expected_scores[row] += lp[outputs[row][-1]]
    for row, output in enumerate(outputs):
        assert _hypothesis(tokens[row], lengths[row]) == output
        assert output[: len(forced[row])] == forced[row]
        assert all(output[i : i + 2] != output[j : j + 2] for i in range(len(output) - 1)
                   for j in range(i + 1, len(output) - 1))
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-4, atol=1e-4)


# --- beam search in training's evaluation ---


def test_eval_scores_the_beam_output_when_configured(seam_model):
    model, variables = seam_model
    beam_tokens, _, _ = decoding.beam_search(
        model, variables, SRC, beam_size=3, max_len=SEARCH_LEN, alpha=0.6
    )
    greedy_tokens, _, _ = decoding.greedy(model, variables, SRC, max_len=SEARCH_LEN)
    weights = (np.arange(len(SRC)) < REAL_ROWS).astype(np.float32)  # the PAD row does not count
    differ = (np.asarray(beam_tokens[:, 0]) != np.asarray(greedy_tokens)).any(-1)[:REAL_ROWS]
    assert differ.any(), "the case should have beam and greedy disagree"
    # Targets are the beam's best outputs, on which greedy decoding scores below 100% exact.
    config = default.get_config()
    config.eval_beam_size, config.eval_length_alpha, config.max_tgt_len = 3, 0.6, SEARCH_LEN
    evaluator = training.make_evaluator(model, config)
    np.testing.assert_array_equal(evaluator.decode(variables, SRC), beam_tokens[:, 0])
    batch = {"src_tokens": SRC, "tgt_tokens": np.asarray(beam_tokens[:, 0]), "weights": weights,
             "predicted_tokens": evaluator.decode(variables, SRC)}
    sums = evaluator.score(variables, batch)
    assert float(sums["exact"]) == REAL_ROWS
    assert float(sums["fr_correct"]) == float(sums["tokens"])


def test_negative_eval_beam_size_is_refused_naming_the_key():
    config = default.get_config()
    config.eval_beam_size = -1
    with pytest.raises(ConfigError, match="eval_beam_size"):
        validate_config(config)


# --- the decode CLI ---

# Lines over the seam model's source vocabulary (5 symbols after the specials), of mixed lengths;
# one is empty and one too long: they keep their place with no hypothesis.
CLI_LINES = ["abc", "d", "eeee", "", "ab", "edcb", "abcdea", "c", "dd", "bca"]


def _seam_trained(seam_model):
    """The seam model as a loaded workdir, with lengths that reuse its compiled searches."""
    model, variables = seam_model
    config = default.get_config()
    config.max_src_len, config.max_tgt_len = SRC.shape[1], SEARCH_LEN
    return TrainedModel(config, model, variables, SymbolVocab(list("abcde")),
                        SymbolVocab(list("xyz")), step=0, averaged_steps=(0,))


def test_nbest_lines_are_the_beam_hypotheses_in_input_order(seam_model):
    trained = _seam_trained(seam_model)
    batch, beam = len(SRC), 3
    decode = functools.partial(infer.decode_hypotheses, trained, CLI_LINES, beam, beam,
                               batch_size=batch, warn=lambda message: None)
    by_length, in_order = decode(), decode(sort=False)
    assert infer.length_sorted_batches(infer.encode_lines(CLI_LINES, trained.src_vocab, 4, print),
                                       batch)[0] == [2, 5, 0, 9], "longest first, ties in order"
    for line, sorted_hypotheses, unsorted in zip(CLI_LINES, by_length, in_order, strict=True):
        if not line or len(line) > SRC.shape[1]:
            assert sorted_hypotheses == unsorted == []
            continue
        # The reference: the line alone (batch row 0) through the library.
        src = np.zeros_like(SRC)
        src[0, : len(line)] = trained.src_vocab.encode(line, add_eos=False)
        tokens, lengths, scores = jax.device_get(decoding.beam_search(
            trained.model, trained.variables, src, beam, SEARCH_LEN, 0.6
        ))
        for k, (got, other) in enumerate(zip(sorted_hypotheses, unsorted, strict=True)):
            assert got.tokens == other.tokens == tokens[0, k, : lengths[0, k]].tolist()
            assert got.text == trained.tgt_vocab.decode(tokens[0, k])
            np.testing.assert_allclose([got.score, other.score], scores[0, k], rtol=1e-5)

    rows = infer.format_outputs(by_length, nbest=2)
    assert len(rows) == 2 * len(CLI_LINES)
    for row, (index, k) in zip(rows, itertools.product(range(len(CLI_LINES)), range(2)), strict=True):
        hypotheses = by_length[index]
        expected = (f"{index}\t{hypotheses[k].score:.4f}\t{hypotheses[k].text}" if hypotheses
                    else f"{index}\t-inf\t")
        assert row == expected
    objects = [json.loads(row) for row in infer.format_outputs(by_length, output_format="jsonl")]
    assert [o["index"] for o in objects] == list(range(len(CLI_LINES)))
    for o, hypotheses in zip(objects, by_length, strict=True):
        assert [(h["tokens"], h["length"], h["score"]) for h in o["hypotheses"]] == [
            (h.tokens, len(h.tokens), h.score) for h in hypotheses]
    texts = infer.decode_lines(trained, CLI_LINES, 0, batch_size=batch, min_len=2,
                               warn=lambda message: None)
    greedy = infer.decode_hypotheses(trained, CLI_LINES, min_len=2, batch_size=batch,
                                     warn=lambda message: None)
    assert texts == [h[0].text if h else "" for h in greedy]
    assert all(len(h[0].tokens) >= 3 for h in greedy if h)
    with pytest.raises(infer.InputError, match="--nbest=2: must be between 1 and 1"):
        infer.decode_hypotheses(trained, CLI_LINES, 0, 2)


def test_jsonl_lines_decode_as_their_joined_text_keeping_the_latest_turns(seam_model):
    trained = _seam_trained(seam_model)
    trained.config.turn_separator = "e"
    rows = [{"context": ["ab", "c"]}, {"source": "dd"}, {"context": ["a", "b", "cd"]}, "[1, 2",
            {"context": ["a", 5]}, {"target": "x"}, {"context": ["abcde"]}]
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    sources, prefixes = decode_input.jsonl_sources(lines, decode_input.fields_of(trained.config))
    assert prefixes is None and sources[:2] == ["abec", "dd"]
    # Over max_src_len=4 the dialogue keeps its latest turns that fit: "b" + "e" + "cd".
    ids, cut = fit_turns(join_turns(["a", "b", "cd"], "e"),
                         lambda text: trained.src_vocab.encode(text, add_eos=False), 4)
    assert cut == 1 and ids == trained.src_vocab.encode("becd", add_eos=False)
    messages = []
    decode = functools.partial(infer.decode_hypotheses, trained, beam_size=3, nbest=3,
                               batch_size=len(SRC))
    got = decode(sources, warn=messages.append)
    assert got[:3] == decode(["abec", "dd", "becd"], warn=lambda message: None)
    assert got[3:] == [[], [], [], []]
    assert messages == [f"line {n}: {problem}; printing an empty line" for n, problem in [
        (4, "not valid JSON (Expecting ',' delimiter at column 6)"),
        (5, "field 'context[1]' is a number; expected a string"),
        (6, "field 'source' (or 'context') is missing"),
        (7, "5 source symbols exceed the model's max_src_len=4")]]
    with pytest.raises(infer.InputError, match=r"^line 4: not valid JSON .* \(--strict\)$"):
        infer.encode_lines(sources, trained.src_vocab, 4, print, strict=True)
    fields = decode_input.fields_of(trained.config)
    sources, prefixes = decode_input.jsonl_sources(
        ['{"source": "a", "p": "x"}', '{"source": "a"}', '{"source": "a", "p": 1}'], fields, "p")
    assert sources[0] == "a" and prefixes == ["x", "", ""]
    assert [str(s) for s in sources[1:] if isinstance(s, BadLine)] == [
        "field 'p' (--prefix_field) is missing", "field 'p' (--prefix_field) is not a string"]
    assert decode_input.reads_jsonl("auto", "chat.jsonl") and not decode_input.reads_jsonl("auto", None)


def test_decode_explains_a_workdir_without_checkpoint(tmp_path):
    with pytest.raises(WorkdirError, match="no checkpoint"):
        infer.decode_file(str(tmp_path))
    assert os.listdir(tmp_path) == [], "looking for a checkpoint must not create directories"
    with pytest.raises(WorkdirError, match="does not exist"):
        infer.decode_file(str(tmp_path / "missing"))
    with pytest.raises(infer.InputError, match="--beam=-1: must be >= 0"):
        infer.decode_file(str(tmp_path), beam_size=-1)


def test_loading_and_decoding_a_workdir_import_nothing_of_training():
    """The decode and evaluate CLIs and the workdir loader read variables only: no train state,
    no optimizer, no training loop."""
    code = ("import sys, flax_s2s.infer, flax_s2s.evaluate, flax_s2s.workdirs; "
            "print(sorted({'flax_s2s.training', 'flax_s2s.warm_start'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]"


def test_each_line_is_read_on_its_own_and_a_bad_one_costs_only_itself(tmp_path):
    path = tmp_path / "input.txt"
    path.write_bytes(b"1+2\r\n\xff\xfe9\n\n4+5\n1+2+3+4\n")
    lines = infer.read_lines(str(path))
    assert lines[0] == "1+2" and lines[2:4] == ["", "4+5"]
    assert isinstance(lines[1], UnicodeDecodeError)
    vocab = SymbolVocab.build("0123456789+")
    messages = []
    encoded = infer.encode_lines(lines, vocab, 5, messages.append)
    assert [ids is None for ids in encoded] == [False, True, True, False, True]
    assert encoded[3] == vocab.encode("4+5", add_eos=False)
    assert messages == [
        "line 2: not valid UTF-8 (byte 0xff at offset 0: invalid start byte); printing an empty line",
        "line 3: empty input; printing an empty line",
        "line 5: 7 source symbols exceed the model's max_src_len=5; printing an empty line",
    ]
    with pytest.raises(infer.InputError, match=r"line 2: not valid UTF-8 .* \(--strict\)"):
        infer.encode_lines(lines, vocab, 5, messages.append, strict=True)


@pytest.mark.slow
def test_decode_cli_decodes_a_file_in_input_order(tmp_path, addition_data_dir):
    workdir = str(tmp_path / "run")
    config = tiny_config(**{
        "data_dir": addition_data_dir, "num_train_steps": 60, "eval_every": 1000, **ROLLED,
        "eval_batch_size": 500, "final_eval_split": "validation",
        "optimizer.learning_rate": 1e-2, "optimizer.warmup_steps": 10,
    })
    training.run(config, workdir)  # long enough to emit digits, not to add
    lines = ["12+34", "999+1", "", "7+x8", "1+2+3+4+5+6+7+8", "5+5", " 40+2 ", "0+0", "3+\udcff4"]
    input_file = tmp_path / "input.txt"  # the last line is not UTF-8: a lone 0xff byte
    input_file.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
    result = subprocess.run(
        [sys.executable, "-m", "flax_s2s.infer", f"--workdir={workdir}", "--beam=2",
         "--alpha=0.6", f"--input={input_file}", "--batch_size=3"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # Reference: the decodable lines in one batch of their own, through the library.
    trained = load_workdir(workdir)
    decodable = [i for i, line in enumerate(lines) if i not in (2, 4, 8)]  # empty, long, not UTF-8
    src = np.zeros((len(decodable), config.max_src_len), np.int32)
    for row, i in enumerate(decodable):
        ids = trained.src_vocab.encode(lines[i].strip(), add_eos=False)
        src[row, : len(ids)] = ids
    tokens, _, scores = jax.device_get(decoding.beam_search(
        trained.model, trained.variables, src, beam_size=2, max_len=config.max_tgt_len, alpha=0.6
    ))
    expected = [""] * len(lines)
    for row, i in enumerate(decodable):
        expected[i] = trained.tgt_vocab.decode(np.asarray(tokens[row, 0]))
    assert result.stdout.splitlines() == expected
    assert any(expected), "the tiny model should emit something"
    assert "line 3: empty" in result.stderr
    assert "line 4: 1 symbol(s) outside the source vocabulary read as <unk>: 'x'" in result.stderr
    assert "line 5: 15 source symbols exceed the model's max_src_len=13" in result.stderr
    assert "line 9: not valid UTF-8 (byte 0xff at offset 2" in result.stderr
    # Batches in input order print what the length-sorted ones did.
    assert infer.decode_file(workdir, str(input_file), beam_size=2, batch_size=3,
                             sort=False) == expected
    # JSON lines decode as their joined text; --prefix_field as a --prefix file.
    jsonl, joined = tmp_path / "chat.jsonl", tmp_path / "joined.txt"
    jsonl.write_text('{"context": ["12", "34"], "p": "1"}\n{"source": "5+5", "p": ""}\n[\n')
    joined.write_text("12 | 34\n5+5\n\n")
    prefixes = tmp_path / "prefixes.txt"
    prefixes.write_text("1\n\n\n")
    assert infer.decode_file(workdir, str(jsonl)) == infer.decode_file(workdir, str(joined))
    assert infer.decode_file(workdir, str(jsonl), prefix_field="p") == infer.decode_file(
        workdir, str(joined), prefix_path=str(prefixes))
    # Under the controls: each output starts with its prefix "1", repeats no symbol
    # (no_repeat_ngram_size 1) and holds at most 3 tokens, EOS included.
    prefixes = tmp_path / "prefixes.txt"
    prefixes.write_text("1\n" * len(lines))
    controlled = infer.decode_file(workdir, str(input_file), beam_size=2, batch_size=3,
                                   prefix_path=str(prefixes), controls=decoding.GenerationControls(
                                       no_repeat_ngram_size=1, max_len_b=3))
    for i, text in enumerate(controlled):
        assert (text.startswith("1") and len(set(text)) == len(text) <= 3) == (i in decodable), text

    # The two best hypotheses of every line, with their scores, and a bad line's empty ones
    # (what --nbest=2 prints; in process: the CLI's flags are tested above)
    nbest = infer.decode_file(workdir, str(input_file), beam_size=2, batch_size=3, nbest=2)
    rows = [row.split("\t") for row in nbest]
    assert [(int(index), text) for index, _, text in rows] == [
        (i, trained.tgt_vocab.decode(np.asarray(tokens[decodable.index(i), k]))
         if i in decodable else "") for i in range(len(lines)) for k in range(2)]
    got_scores = np.array([float(score) for _, score, _ in rows]).reshape(len(lines), 2)
    np.testing.assert_allclose(got_scores[decodable], scores, atol=1e-4)
    assert np.isneginf(got_scores[[2, 4, 8]]).all()
    with pytest.raises(infer.InputError, match=r"line 3: empty input \(--strict\)"):
        infer.decode_file(workdir, str(input_file), strict=True)
    with pytest.raises(infer.InputError, match="none of the 2 input line"):
        infer.decode_lines(trained, ["", "1+2+3+4+5+6+7+8"], warn=lambda message: None)

    # The former module name still runs the CLI, saying where it went.
    alias = subprocess.run(
        [sys.executable, "-m", "flax_s2s.decode", f"--workdir={workdir}", "--beam=2",
         f"--input={input_file}", "--batch_size=3"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert alias.returncode == 0, alias.stderr[-3000:]
    assert alias.stdout == result.stdout
    assert "flax_s2s.decode is now python -m flax_s2s.cli.decode" in alias.stderr

    # A corrupt vocabulary names its file, to the decoder and to a resumed training run (which
    # finds it changed since the workdir recorded it, before reading it).
    (tmp_path / "run" / "src_vocab.json").write_text('{"symbols": ["1", ')
    with pytest.raises(FileFormatError, match=r"src_vocab\.json: not a symbol vocabulary"):
        infer.decode_file(workdir, str(input_file))
    with pytest.raises(FileFormatError, match=r"src_vocab\.json: not the vocabulary this workdir "
                                              r"was made with"):
        training.run(config, workdir)


def test_early_stop_keeps_searching_while_the_penalty_can_still_lift_a_live_prefix():
    """"EOS" alone (p = .4) finishes first; "A A A EOS" (p = .35 * .97 ** 3) scores higher once
    the length penalty (alpha = 1) divides it by 1.5. A stop rule that ignored the penalty
    still to come would return "EOS"."""
    table = _log_table({
        (0, BOS): {EOS: 0.4, A: 0.35, B: 0.25},
        (1, A): {A: 0.97, EOS: 0.015, B: 0.015},
        (2, A): {A: 0.97, EOS: 0.015, B: 0.015},
        (3, A): {EOS: 0.97, A: 0.015, B: 0.015},
    })

    def next_log_probs(prefix):
        return table[len(prefix), (BOS, *prefix)[-1]]

    src = np.ones((1, 2), np.int32)
    for alpha, best in ((0.0, (EOS,)), (1.0, (A, A, A, EOS))):
        expected = _reference_beam_search(next_log_probs, 5, 1, 4, alpha)
        assert expected[0][0] == best
        tokens, lengths, scores = jax.device_get(decoding.beam_search(
            MarkovDecoder(), {"table": table}, src, beam_size=1, max_len=4, alpha=alpha
        ))
        assert _hypothesis(tokens[0, 0], lengths[0, 0]) == best
        np.testing.assert_allclose(scores[0, 0], expected[0][1], rtol=1e-6)
