"""The recovery diagnostic on stand-in models whose answer is known."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax_s2s import diagnostics
from flax_s2s.special_tokens import SpecialTokens

PAD, BOS, EOS = 0, 1, 2
VOCAB, ROWS, LENGTH = 10, 64, 8


def _model(forward):
    return types.SimpleNamespace(special_tokens=SpecialTokens(),
                                 encode=lambda variables, src: src, forward=forward)


# logits a function of the position alone: the input token is ignored
IGNORING = _model(lambda variables, encoded, inputs: jnp.broadcast_to(
    variables["params"][: inputs.shape[1]], (*inputs.shape, VOCAB)))
# logits a function of the input token alone
BIGRAM = _model(lambda variables, encoded, inputs: variables["params"][inputs])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    tgt = np.zeros((ROWS, LENGTH), np.int32)
    for row, n in enumerate(rng.integers(2, LENGTH + 1, ROWS)):
        tgt[row, :n - 1] = rng.integers(4, VOCAB, n - 1)
        tgt[row, n - 1] = EOS
    # sharpen towards the data so that some predictions are right
    table = rng.normal(size=(VOCAB, VOCAB)).astype(np.float32)
    return tgt, table


def _counts(model, params, tgt, position, corruption="wrong", key=None):
    fn = jax.jit(lambda params, tgt, position, key: diagnostics.recovery_counts(
        model, {"params": params}, tgt, tgt, position, corruption, key))
    counts = fn(params, tgt, position, key)
    return {name: np.asarray(value) for name, value in counts.items()}


@pytest.mark.parametrize("corruption", diagnostics.CORRUPTIONS)
def test_a_model_that_ignores_its_input_recovers_at_once(data, corruption):
    tgt, table = data
    for position in (0, 2):
        counts = _counts(IGNORING, table[:LENGTH], tgt, position, corruption,
                         jax.random.PRNGKey(position))
        np.testing.assert_array_equal(counts["corrupted"], counts["clean"])
        usable = (tgt != PAD).sum(1) - 1 > position
        expected_tokens = [((tgt[:, position + d] != PAD) & usable).sum()
                           if 0 < d < LENGTH - position else 0 for d in range(LENGTH)]
        np.testing.assert_array_equal(counts["tokens"], expected_tokens)


def test_a_bigram_model_fails_one_step_after_the_wrong_token_then_recovers(data):
    tgt, table = data
    position = 1
    counts = _counts(BIGRAM, table, tgt, position)
    inputs = np.concatenate([np.full((ROWS, 1), BOS), tgt[:, :-1]], 1)
    # the most likely wrong token where y_1 is predicted (after reading y_0), by NumPy
    allowed = table[inputs[:, position]].copy()
    allowed[:, [PAD, BOS]] = -np.inf
    allowed[np.arange(ROWS), tgt[:, position]] = -np.inf
    wrong = allowed.argmax(1)
    np.testing.assert_array_equal(counts["replaced"], wrong)
    corrupted_inputs = inputs.copy()
    corrupted_inputs[:, position + 1] = wrong
    usable = (tgt != PAD).sum(1) - 1 > position
    for d in range(1, LENGTH - position):
        s = position + d
        real = (tgt[:, s] != PAD) & usable
        clean = ((table[inputs[:, s]].argmax(1) == tgt[:, s]) & real).sum()
        corrupted = ((table[corrupted_inputs[:, s]].argmax(1) == tgt[:, s]) & real).sum()
        assert counts["clean"][d] == clean and counts["corrupted"][d] == corrupted
    assert counts["corrupted"][1] != counts["clean"][1]  # the wrong token did harm
    np.testing.assert_array_equal(counts["corrupted"][2:], counts["clean"][2:])


def test_random_corruption_draws_other_non_special_tokens(data):
    tgt, table = data
    counts = _counts(BIGRAM, table, tgt, 0, "random", jax.random.PRNGKey(5))
    replaced = counts["replaced"]
    assert (replaced != tgt[:, 0]).all() and (replaced >= 4).all() and (replaced < VOCAB).all()
    assert len(set(replaced.tolist())) == VOCAB - 4  # every non-special id is drawn


def test_recovery_curves_sum_the_positions(data):
    tgt, table = data
    ignoring = diagnostics.recovery_curve(IGNORING, {"params": table[:LENGTH]}, tgt, tgt,
                                          [0, 1, 2, 3])
    counted = ignoring["tokens"] > 0
    assert counted[1:LENGTH - 1].all() and not counted[0]
    np.testing.assert_array_equal(ignoring["corrupted"][counted], ignoring["clean"][counted])
    bigram = diagnostics.recovery_curve(BIGRAM, {"params": table}, tgt, tgt, [0, 1, 2, 3],
                                        "random", jax.random.PRNGKey(1))
    # by hand: the clean accuracy at d = 1 over k = 0..3 from the bigram's argmax, in NumPy
    inputs = np.concatenate([np.full((ROWS, 1), BOS), tgt[:, :-1]], 1)
    right, real = 0, 0
    for k in range(4):
        usable = ((tgt != PAD).sum(1) - 1 > k) & (tgt[:, k + 1] != PAD)
        right += ((table[inputs[:, k + 1]].argmax(1) == tgt[:, k + 1]) & usable).sum()
        real += usable.sum()
    assert bigram["tokens"][1] == real
    assert bigram["clean"][1] == pytest.approx(right / real)
    np.testing.assert_array_equal(bigram["corrupted"][2:][counted[2:]],
                                  bigram["clean"][2:][counted[2:]])
