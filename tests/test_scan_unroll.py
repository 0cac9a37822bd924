"""The RNN's per-length scan unroll (`unroll.scan_unroll`): the traced program unrolls what it says,
and a fully unrolled encoder and decoder give the variables and numbers of flax's rolled `nn.RNN`
and a rolled scan."""

import jax
import numpy as np
import pytest

from configs import default
from flax_s2s import forcing
from flax_s2s.models import build_model, decoder_inputs, unroll

VOCAB, BATCH = 9, 3
SHORT = min(6, unroll.FULL_UNROLL_MAX)  # fully unrolled
LONG = unroll.FULL_UNROLL_MAX + 1  # rolled: the first length past the limit


def _tokens(length: int, seed: int) -> np.ndarray:
    """[BATCH, length] tokens in 4..VOCAB-1, rows padded (0) to unlike lengths."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, VOCAB, size=(BATCH, length)).astype(np.int32)
    for row, keep in enumerate((length, length // 2, 1)):
        tokens[row, keep:] = 0
    return tokens


@pytest.fixture(scope="module")
def model():
    config = default.get_config()
    config.model.update(emb_dim=8, hidden_dim=8, attention_dim=8, bidirectional=True,
                        dropout_rate=0.3)
    return build_model(config, VOCAB, VOCAB)


def _scan_unrolls(jaxpr) -> list[int]:
    """The `unroll` of every scan in a jaxpr, nested ones included, in program order."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            found.append(eqn.params["unroll"])
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += _scan_unrolls(inner)
    return found


def _rolled(monkeypatch) -> None:
    """Every scan rolled: the encoder runs flax's own `nn.RNN` path (its unroll, 1, is kept)."""
    monkeypatch.setattr(unroll, "FULL_UNROLL_MAX", 0)


def test_scan_unroll_is_full_up_to_the_limit_then_rolled():
    assert [unroll.scan_unroll(n) for n in (1, SHORT, unroll.FULL_UNROLL_MAX)] == [
        1, SHORT, unroll.FULL_UNROLL_MAX]
    assert unroll.scan_unroll(LONG) == 1


def _forward(model, variables, src, tgt):
    """Encoder memory [batch, src_len, 2 * hidden] and teacher-forced logits."""
    encoded = model.encode(variables, src)
    return encoded["memory"], model.forward(variables, encoded, decoder_inputs(tgt))


def _traced_unrolls(model, variables, src, tgt) -> list[int]:
    """Two encoder directions, then the teacher-forced decoder scan."""
    return _scan_unrolls(jax.make_jaxpr(lambda v: _forward(model, v, src, tgt))(variables).jaxpr)


@pytest.mark.parametrize("length, expected", [(SHORT, SHORT), (LONG, 1)])
def test_traced_encoder_and_decoder_unroll_by_length(model, length, expected):
    src, tgt = _tokens(length, 0), _tokens(length, 1)
    variables = model.init(jax.random.PRNGKey(0), src, tgt)
    assert _traced_unrolls(model, variables, src, tgt) == [expected] * 3


def test_unrolled_variables_match_flax_rnn_layout(model, monkeypatch):
    """Checkpoints written before (by a plain `nn.RNN` encoder) keep loading: same tree, same
    initial values, `enc_fwd_0/cell/...`."""
    src, tgt = _tokens(SHORT, 0), _tokens(SHORT, 1)
    unrolled = model.init(jax.random.PRNGKey(0), src, tgt)
    _rolled(monkeypatch)
    rolled = model.init(jax.random.PRNGKey(0), src, tgt)
    assert jax.tree.structure(unrolled) == jax.tree.structure(rolled)
    jax.tree.map(np.testing.assert_array_equal, unrolled, rolled)
    assert {"enc_fwd_0", "enc_bwd_0"} <= set(unrolled["params"])
    assert "cell" in unrolled["params"]["enc_bwd_0"]


def test_unrolled_forward_equals_rolled(model, monkeypatch):
    src, tgt = _tokens(SHORT, 2), _tokens(SHORT, 3)
    variables = model.init(jax.random.PRNGKey(4), src, tgt)
    assert _traced_unrolls(model, variables, src, tgt) == [SHORT] * 3
    memory, logits = _forward(model, variables, src, tgt)
    _rolled(monkeypatch)
    assert _traced_unrolls(model, variables, src, tgt) == [1] * 3  # a different program
    rolled_memory, rolled_logits = _forward(model, variables, src, tgt)
    np.testing.assert_allclose(memory, rolled_memory, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, rolled_logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("length, expected", [(SHORT, SHORT), (LONG, 1)])
def test_scheduled_sampling_unroll_follows_the_same_rule(model, length, expected):
    src, tgt = _tokens(length, 0), _tokens(length, 1)
    variables = model.init(jax.random.PRNGKey(0), src, tgt)
    gold = decoder_inputs(tgt)
    mask = np.arange(length)[None, :] % 2 == 0  # gold at even positions, own tokens at odd

    def scheduled(variables):
        encoded = model.encode(variables, src)
        return forcing.scanned_unroll(model, variables, encoded, gold, mask, None)

    assert _scan_unrolls(jax.make_jaxpr(scheduled)(variables).jaxpr) == [expected] * 3


def test_unrolled_training_gradients_equal_rolled(model, monkeypatch):
    """Under jit, in train mode with dropout (a key per position): the same gradients."""
    src, tgt = _tokens(SHORT, 5), _tokens(SHORT, 6)
    variables = model.init(jax.random.PRNGKey(7), src, tgt)
    dropout_key = jax.random.PRNGKey(8)

    def loss(params):
        encoded = model.encode({"params": params}, src, train=True, rng=dropout_key)
        logits = model.forward({"params": params}, encoded, decoder_inputs(tgt), train=True,
                               rng=jax.random.fold_in(dropout_key, 1))
        return (jax.nn.log_softmax(logits) * jax.nn.one_hot(tgt, VOCAB)).sum()

    def traced_unrolls() -> set[int]:  # the forward scans and their transposes
        return set(_scan_unrolls(jax.make_jaxpr(jax.grad(loss))(variables["params"]).jaxpr))

    assert traced_unrolls() == {SHORT}
    unrolled = jax.jit(jax.grad(loss))(variables["params"])
    _rolled(monkeypatch)
    assert traced_unrolls() == {1}
    rolled = jax.jit(jax.grad(loss))(variables["params"])  # a new function: traced again
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 unrolled, rolled)


def test_the_tests_rolled_lengths_are_past_the_full_unroll():
    from conftest import ROLLED

    assert unroll.scan_unroll(min(ROLLED.values())) == 1
