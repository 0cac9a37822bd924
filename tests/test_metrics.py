import jax
import jax.numpy as jnp
import numpy as np
import optax
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


def _one_hot_cross_entropy_sum(logits, targets, weights, label_smoothing):
    """The formula cross_entropy_sum replaced: smoothed one-hot labels, then optax."""
    labels = optax.smooth_labels(jax.nn.one_hot(targets, logits.shape[-1]), label_smoothing)
    return (optax.softmax_cross_entropy(logits.astype(jnp.float32), labels) * weights).sum()


def _logits_targets_weights(seed=0, shape=(3, 5, 11)):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=shape) * 4).astype(np.float32)
    targets = rng.integers(1, shape[-1], size=shape[:2])
    targets[0, 3:] = 0
    targets[2, 1:] = 0
    targets[1, 2] = shape[-1] - 1  # the last class
    # Token weights times example weights, one example dropped and one counted half.
    weights = metrics.token_weights(targets, np.array([1.0, 0.5, 0.0]))
    return jnp.asarray(logits), jnp.asarray(targets, jnp.int32), weights


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
def test_cross_entropy_equals_the_one_hot_formula_in_value_and_gradient(label_smoothing):
    logits, targets, weights = _logits_targets_weights()

    def value_and_grad(loss):
        return jax.jit(jax.value_and_grad(lambda x: loss(x, targets, weights, label_smoothing)))(
            logits)

    got, got_grad = value_and_grad(metrics.cross_entropy_sum)
    expected, expected_grad = value_and_grad(_one_hot_cross_entropy_sum)
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-6)
    np.testing.assert_allclose(got_grad, expected_grad, rtol=1e-5, atol=1e-7)
    # NumPy: the float64 loss (over weight-1 rows; the half row counted half) and its gradient,
    # weights * (softmax - smoothed target).
    x = np.asarray(logits, np.float64)
    log_p = x - x.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    target = np.full(x.shape, label_smoothing / x.shape[-1])
    np.put_along_axis(target, np.asarray(targets)[..., None], 1.0 - label_smoothing
                      + label_smoothing / x.shape[-1], -1)
    w = np.asarray(weights, np.float64)
    np.testing.assert_allclose(float(got), -(w[..., None] * target * log_p).sum(), rtol=1e-5)
    np.testing.assert_allclose(got_grad, w[..., None] * (np.exp(log_p) - target), atol=1e-6)
    assert np.abs(np.asarray(got_grad)[2, 1:]).max() == 0  # weight 0: no gradient


def test_cross_entropy_of_bfloat16_logits_is_computed_in_float32():
    logits, targets, weights = _logits_targets_weights()
    half = logits.astype(jnp.bfloat16)
    got = metrics.cross_entropy_sum(half, targets, weights, 0.1)
    expected = _one_hot_cross_entropy_sum(half.astype(jnp.float32), targets, weights, 0.1)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-6)


def _one_hot_comparisons(loss, shape):
    """Comparisons of token ids against class ids with the logits' shape (how a one-hot is
    built: eq(targets[..., None], iota)) in the jaxpr of the loss and its gradient."""
    logits, targets, weights = _logits_targets_weights(shape=shape)
    jaxpr = jax.make_jaxpr(jax.value_and_grad(lambda x: loss(x, targets, weights, 0.1)))(logits)

    def equations(jaxpr):
        for eqn in jaxpr.eqns:
            yield eqn
            for param in eqn.params.values():  # the bodies of nested jit calls
                inner = getattr(param, "jaxpr", param)
                if hasattr(inner, "eqns"):
                    yield from equations(inner)

    return [eqn for eqn in equations(jaxpr.jaxpr) if eqn.primitive.name == "eq"
            and all(jnp.issubdtype(v.aval.dtype, jnp.integer) for v in eqn.invars)
            and any(tuple(v.aval.shape) == shape for v in eqn.outvars)]


def test_cross_entropy_builds_no_one_hot():
    shape = (3, 5, 11)
    assert _one_hot_comparisons(metrics.cross_entropy_sum, shape) == []
    assert _one_hot_comparisons(_one_hot_cross_entropy_sum, shape)  # the check can fail


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
