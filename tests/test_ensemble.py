"""Ensemble decoding: the mean of the members' distributions, step by step, through the seam."""

import dataclasses

import jax
import numpy as np
import pytest
from conftest import TINY_TRANSFORMER, train_tiny
from test_decoding import _reference_beam_search

from flax_s2s import decoding
from flax_s2s.data.vocab import BOS, EOS, PAD
from flax_s2s.ensemble import Ensemble

MAX_LEN = 7


@pytest.fixture(scope="module")
def members():
    """(model, variables, src_tokens) of three unlike members: a trained Transformer, the same
    Transformer at initialisation, and a trained unidirectional BatchNorm LSTM (the runs are
    shared with tests/test_transformer.py and tests/test_norms.py)."""
    transformer = train_tiny((*TINY_TRANSFORMER.items(), ("model.norm", "layer"),
                              ("model.norm_position", "pre")))
    lstm = train_tiny((("model.norm", "batch"), ("model.norm_position", "pre"),
                       ("model.bidirectional", False)))
    _, t_model, _, batch, t_initial, t_final, _ = transformer
    _, l_model, _, _, _, l_final, _ = lstm
    return ([(t_model, t_final.variables), (t_model, t_initial.variables),
             (l_model, l_final.variables)], np.asarray(batch["src_tokens"]))


def reference_greedy(members, src_tokens):
    """Greedy decoding of the mixture, one Python step at a time, mixing in NumPy."""
    steps = [jax.jit(model.step) for model, _ in members]
    encoded = [model.encode(v, src_tokens) for model, v in members]
    caches = [model.init_cache(v, e, MAX_LEN) for (model, v), e in zip(members, encoded, strict=True)]
    batch = src_tokens.shape[0]
    prev = np.full(batch, BOS, np.int32)
    tokens = np.full((batch, MAX_LEN), PAD, np.int32)
    scores, finished = np.zeros(batch), np.zeros(batch, bool)
    for position in range(MAX_LEN):
        probs = []
        for i, ((_, variables), step) in enumerate(zip(members, steps, strict=True)):
            logits, caches[i] = step(variables, encoded[i], caches[i], prev, position)
            probs.append(np.exp(np.asarray(decoding.output_log_probs(logits), np.float64)))
        with np.errstate(divide="ignore"):  # PAD and BOS have probability 0
            mixture = np.log(np.mean(probs, axis=0))
        chosen = mixture.argmax(-1)
        scores += np.where(finished, 0.0, mixture[np.arange(batch), chosen])
        chosen = np.where(finished, PAD, chosen)
        tokens[:, position] = chosen
        finished |= chosen == EOS
        prev = chosen.astype(np.int32)
    return tokens, scores


def test_greedy_ensemble_follows_the_mean_of_the_member_distributions(members):
    member_list, src_tokens = members
    models, variables = zip(*member_list, strict=True)
    tokens, lengths, scores = decoding.greedy(Ensemble(models), variables, src_tokens, MAX_LEN)
    expected_tokens, expected_scores = reference_greedy(member_list, src_tokens)
    np.testing.assert_array_equal(tokens, expected_tokens)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)
    # The members disagree, so the mixture is not just one of them.
    alone = [np.asarray(decoding.greedy(m, v, src_tokens, MAX_LEN)[0]) for m, v in member_list]
    assert not all(np.array_equal(a, alone[0]) for a in alone[1:])


def test_an_ensemble_of_one_decodes_as_its_member(members):
    (model, variables), *_ = members[0]
    src_tokens = members[1]
    alone = decoding.greedy(model, variables, src_tokens, MAX_LEN)
    ensembled = decoding.greedy(Ensemble((model,)), (variables,), src_tokens, MAX_LEN)
    np.testing.assert_array_equal(ensembled[0], alone[0])
    np.testing.assert_allclose(ensembled[2], alone[2], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("member", [0, 2])  # Transformer (KV cache), LSTM (state)
def test_beam_search_over_an_ensemble_of_one_matches_its_member(members, member):
    """The beams reorder the tuple of member caches as they reorder a member's own."""
    model, variables = members[0][member]
    src_tokens = members[1]
    alone = decoding.beam_search(model, variables, src_tokens, beam_size=3, max_len=MAX_LEN, alpha=0.6)
    ensembled = decoding.beam_search(Ensemble((model,)), (variables,), src_tokens, beam_size=3,
                                     max_len=MAX_LEN, alpha=0.6)
    np.testing.assert_array_equal(ensembled[0], alone[0])
    np.testing.assert_allclose(ensembled[2], alone[2], rtol=1e-6, atol=1e-6)


def mixture_next_log_probs(members, src_row):
    """next_log_probs(prefix) -> the mixture's log-probs [vocab] after BOS + prefix, for one
    source row: each member steps along the prefix from its parent's cache (memoised), and the
    probabilities are averaged in NumPy."""
    steps = [jax.jit(model.step) for model, _ in members]
    encoded = [model.encode(v, src_row[None]) for model, v in members]
    start = [model.init_cache(v, e, MAX_LEN) for (model, v), e in zip(members, encoded, strict=True)]
    memo = {}  # prefix -> (member caches after reading it, mixture log-probs of the next token)

    def advance(prefix):
        if prefix not in memo:
            caches = start
            if prefix:
                advance(prefix[:-1])
                caches = memo[prefix[:-1]][0]
            prev = np.array([prefix[-1] if prefix else BOS], np.int32)
            new_caches, probs = [], []
            for i, ((_, variables), step) in enumerate(zip(members, steps, strict=True)):
                logits, cache = step(variables, encoded[i], caches[i], prev, len(prefix))
                new_caches.append(cache)
                probs.append(np.exp(np.asarray(decoding.output_log_probs(logits), np.float64))[0])
            with np.errstate(divide="ignore"):  # PAD and BOS have probability 0
                memo[prefix] = (new_caches, np.log(np.mean(probs, axis=0)))
        return memo[prefix][1]

    return advance


def test_beam_search_over_unlike_members_equals_a_reference_beam_search(members):
    """Three members with unlike caches (a KV cache twice, an LSTM state): beam search reorders
    all of them together, and its hypotheses and scores are those of a plain Python beam search
    over the NumPy mixture."""
    member_list, src_tokens = members
    models, variables = zip(*member_list, strict=True)
    src_tokens = src_tokens[:4]
    beam_size, alpha = 3, 0.6
    tokens, lengths, scores = jax.device_get(decoding.beam_search(
        Ensemble(models), variables, src_tokens, beam_size=beam_size, max_len=MAX_LEN, alpha=alpha
    ))
    vocab = models[0].module.tgt_vocab_size
    for row, src_row in enumerate(src_tokens):
        next_log_probs = mixture_next_log_probs(member_list, src_row)
        expected = _reference_beam_search(next_log_probs, vocab, beam_size, MAX_LEN, alpha)
        np.testing.assert_allclose(scores[row], [s for _, s in expected], rtol=1e-4, atol=1e-4)
        found = [tuple(int(t) for t in tokens[row, k, : lengths[row, k]]) for k in range(beam_size)]
        assert found == [h for h, _ in expected]


def test_members_with_other_target_vocabularies_are_refused(members):
    (transformer, _), _, (lstm, _) = members[0]
    wider = dataclasses.replace(lstm.module.config, tgt_vocab_size=lstm.module.tgt_vocab_size + 1)
    other = dataclasses.replace(lstm, module=lstm.module.clone(config=wider))
    with pytest.raises(ValueError, match="share the target vocabulary"):
        Ensemble([transformer, other])


def test_an_ensemble_needs_members():
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble(())
