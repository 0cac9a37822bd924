import jax
import numpy as np
import pytest

from flax_s2s import metrics


def _numpy_masked_cross_entropy(logits, targets, label_smoothing):
    total, vocab = 0.0, logits.shape[-1]
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            if targets[b, t] == 0:
                continue
            row = logits[b, t].astype(np.float64)
            log_probs = row - row.max() - np.log(np.exp(row - row.max()).sum())
            target = np.full(vocab, label_smoothing / vocab)
            target[targets[b, t]] += 1.0 - label_smoothing
            total -= (target * log_probs).sum()
    return total


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_masked_loss_equals_numpy_reference(label_smoothing):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype(np.float32) * 3
    targets = rng.integers(1, 7, size=(3, 5))
    targets[0, 3:] = 0
    targets[2, 1:] = 0
    weights = metrics.token_weights(targets)
    got = metrics.cross_entropy_sum(logits, targets, weights, label_smoothing)
    expected = _numpy_masked_cross_entropy(logits, targets, label_smoothing)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    assert float(weights.sum()) == (targets != 0).sum()


def test_example_weights_remove_padded_rows():
    targets = np.array([[4, 2, 0], [5, 6, 2]])
    weights = metrics.token_weights(targets, np.array([1.0, 0.0]))
    assert weights.tolist() == [[1, 1, 0], [0, 0, 0]]


def test_accuracy_counts():
    targets = np.array([[4, 2, 0], [5, 6, 2], [7, 2, 0]])
    predicted = np.array([[4, 2, 0], [5, 3, 2], [7, 2, 0]])
    weights = metrics.token_weights(targets)
    assert float(metrics.correct_tokens(predicted, targets, weights)) == 6
    assert float(metrics.exact_matches(predicted, targets, np.array([1.0, 1.0, 0.0]))) == 1
    correct, counted = jax.device_get(metrics.accuracy_by_position(predicted, targets, weights))
    assert correct.tolist() == [3, 2, 1] and counted.tolist() == [3, 3, 1]
