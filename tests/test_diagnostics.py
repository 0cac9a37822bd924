"""The recovery diagnostic on stand-in models whose answer is known."""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax_s2s import diagnostics
from flax_s2s.special_tokens import SpecialTokens

PAD, BOS, EOS = 0, 1, 2
VOCAB, ROWS, LENGTH = 10, 64, 8


@dataclasses.dataclass(frozen=True)
class _Model:
    """A stand-in for the seam, hashable like `Seq2Seq`."""

    forward: Callable
    special_tokens: SpecialTokens = SpecialTokens()

    def encode(self, variables, src):
        return src


# logits a function of the position alone: the input token is ignored
IGNORING = _Model(lambda variables, encoded, inputs: jnp.broadcast_to(
    variables["params"][: inputs.shape[1]], (*inputs.shape, VOCAB)))
# logits a function of the input token alone
BIGRAM = _Model(lambda variables, encoded, inputs: variables["params"][inputs])


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


def test_batched_curves_equal_the_one_batch_curve(data):
    """Batches of 24 of 64 rows: the last one filled with rows that must count nothing."""
    tgt, table = data
    whole = diagnostics.recovery_curve(BIGRAM, {"params": table}, tgt, tgt, [0, 1, 2])
    batched = diagnostics.recovery_curve(BIGRAM, {"params": table}, tgt, tgt, [0, 1, 2],
                                         batch_size=24)
    for name in ("tokens", "clean", "corrupted"):
        np.testing.assert_array_equal(batched[name], whole[name])


F, T = False, True


@pytest.mark.parametrize("prediction, reference, expected", [
    ([1, 2, 3, 4], [1, 2, 3, 4], [F, F, F, F]),
    ([1, 9, 3, 4], [1, 2, 3, 4], [F, T, F, F]),  # a substitution
    ([1, 3, 4], [1, 2, 3, 4], [F, T, F, F]),  # a deletion
    ([1, 7, 2, 3], [1, 2, 3], [F, T, F]),  # an insertion: counted at the next position
    ([7, 8, 1, 2, 3], [1, 2, 3], [T, F, F]),
    ([1, 2, 5, 6], [1, 2], [F, T]),  # insertions at the end: the last position
    ([], [1, 2, 3], [T, T, T]),
    ([5], [], []),
    ([2, 1], [1, 2], [T, T]),
    # an insertion and a deletion; traced back from the end, the later 2 matches, so the
    # earlier one is inserted before position 1
    ([1, 2, 2, 3, 4], [1, 2, 3, 4, 5], [F, T, F, F, T]),
])
def test_reference_errors_on_hand_aligned_outputs(prediction, reference, expected):
    assert diagnostics.reference_errors(prediction, reference) == expected


def test_error_after_error_counts_by_hand():
    got = diagnostics.error_after_error(
        [[1, 9, 3, 4], [], [5, 6]], [[1, 2, 3, 4], [1, 2, 3], [5, 6]])
    # errors: [F, T, F, F], [T, T, T], [F, F]
    assert {k: v for k, v in got.items() if k != "by_distance"} == {
        "errors_after_clean": 2, "positions_after_clean": 5, "rate_after_clean": 0.4,
        "errors_after_error": 2, "positions_after_error": 4, "rate_after_error": 0.5}
    assert got["by_distance"] == {"distance": [1, 2], "errors": [2, 0], "positions": [3, 1],
                                  "rate": [2 / 3, 0.0]}
    clean = diagnostics.error_after_error([[1, 2]], [[1, 2]])
    assert np.isnan(clean["rate_after_error"]) and clean["rate_after_clean"] == 0.0


def _outputs(contagious: bool, rate: float = 0.2, rows: int = 3000):
    """References over ids 0..49 and outputs whose tokens are replaced by ids outside them (so
    the alignment stays positional) independently with probability `rate`, or, `contagious`,
    every token after the first replaced one too."""
    rng = np.random.default_rng(1)
    predictions, references = [], []
    for _ in range(rows):
        reference = rng.integers(0, 50, rng.integers(4, 11)).tolist()
        wrong = rng.random(len(reference)) < rate
        if contagious and wrong.any():
            wrong[wrong.argmax():] = True
        pairs = enumerate(zip(reference, wrong, strict=True))
        predictions.append([100 + i if w else t for i, (t, w) in pairs])
        references.append(reference)
    return predictions, references


def test_independent_errors_give_equal_rates_and_caused_ones_a_rate_of_one():
    rate = 0.2
    got = diagnostics.error_after_error(*_outputs(False, rate))
    n_error, n_clean = got["positions_after_error"], got["positions_after_clean"]
    standard_error = np.sqrt(rate * (1 - rate) * (1 / n_error + 1 / n_clean))
    assert abs(got["rate_after_error"] - got["rate_after_clean"]) < 3 * standard_error
    assert abs(got["rate_after_clean"] - rate) < 3 * np.sqrt(rate * (1 - rate) / n_clean)
    near = got["by_distance"]["positions"][0]
    assert abs(got["by_distance"]["rate"][0] - rate) < 3 * np.sqrt(rate * (1 - rate) / near)
    caused = diagnostics.error_after_error(*_outputs(True, rate))
    assert caused["rate_after_error"] == 1.0 and caused["by_distance"]["rate"] == [1.0]
    assert abs(caused["rate_after_clean"] - rate) < 3 * np.sqrt(
        rate * (1 - rate) / caused["positions_after_clean"])
