import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from flax_s2s import decoding
from flax_s2s.data.vocab import BOS, EOS, PAD
from flax_s2s.models import build_model

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


def _python_loop_greedy(model, variables, src, max_len):
    encoded = model.encode(variables, src)
    cache = model.init_cache(variables, encoded, max_len)
    prev = jnp.full((src.shape[0],), BOS)
    rows = [[] for _ in range(src.shape[0])]
    finished = [False] * src.shape[0]
    for position in range(max_len):
        logits, cache = model.step(variables, encoded, cache, prev, position)
        logits = np.asarray(logits).copy()
        logits[:, [PAD, BOS]] = -np.inf  # never emitted
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


def test_greedy_score_is_sum_of_chosen_log_probs(random_model):
    model, variables, src = random_model
    tokens, lengths, scores = decoding.greedy(model, variables, src, max_len=MAX_LEN)
    # teacher-force the decoded tokens and add up their log-probabilities
    from flax_s2s.models import decoder_inputs

    logits = model.forward(variables, model.encode(variables, src), decoder_inputs(tokens))
    logits = np.asarray(logits).copy()
    logits[..., [PAD, BOS]] = -np.inf
    log_probs = np.asarray(jax.nn.log_softmax(logits))
    for b in range(src.shape[0]):
        n = int(lengths[b])
        expected = sum(log_probs[b, t, int(tokens[b, t])] for t in range(n))
        np.testing.assert_allclose(float(scores[b]), expected, rtol=1e-5, atol=1e-5)
