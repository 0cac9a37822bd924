"""Ensemble decoding: the mean of the members' distributions, step by step, through the seam."""

import jax
import numpy as np
import pytest
from conftest import TINY_TRANSFORMER, train_tiny

from flax_s2s import decoding
from flax_s2s.data.vocab import EOS, PAD
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
    prev = np.full(batch, 1, np.int32)  # BOS
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


def test_an_ensemble_needs_members():
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble(())
