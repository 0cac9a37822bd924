"""Minimum risk training: the risk and its gradient against NumPy on a bigram table with
enumerated candidates, beam candidates against a plain-Python beam search, the config, one train
step. The costs themselves: tests/test_sequence_costs.py."""

import itertools
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import train_tiny, untrained_symbol_model
from test_sequence_costs import python_edit, symbols  # the same PAD and EOS ids

from configs import default
from flax_s2s import metrics, mrt, resume
from flax_s2s.forcing import TeacherForcing
from flax_s2s.special_tokens import SpecialTokens
from flax_s2s.training import step
from flax_s2s.training.config import ConfigError, validate_config

PAD, BOS, EOS = 0, 1, 2
A, B = 4, 5
VOCAB = 6
LENGTH = 3


# Every output of at most 2 symbols over {A, B}, then EOS; the last repeats the first, which
# the candidate set must drop.
ENUMERATED = [list(s) + [EOS] for n in range(3) for s in itertools.product([A, B], repeat=n)]
CANDIDATES = np.array([c + [PAD] * (LENGTH - len(c)) for c in ENUMERATED + ENUMERATED[:1]])
REFERENCES = np.array([[A, B, EOS], [B, EOS, PAD]], np.int32)
BIGRAM = types.SimpleNamespace(  # logits a function of the token read: variables are a table
    special_tokens=SpecialTokens(),
    forward=lambda variables, encoded, inputs, **kw: variables["params"][inputs],
)


def numpy_risk_and_gradient(table: np.ndarray, reference, alpha: float):
    """Risk and d risk / d table in float64 by closed form over the distinct candidates."""
    log_z = np.log(np.exp(table).sum(1))
    softmax = np.exp(table - log_z[:, None])
    distinct = [list(c) for c in dict.fromkeys(map(tuple, CANDIDATES.tolist()))]
    log_p, d_log_p, costs = [], [], []
    for cand in distinct:
        inputs = [BOS] + cand[:-1]
        grad = np.zeros_like(table)
        total = 0.0
        for read, token in zip(inputs, cand, strict=True):
            if token == PAD:
                continue
            total += table[read, token] - log_z[read]
            grad[read] -= softmax[read]
            grad[read, token] += 1.0
        log_p.append(total)
        d_log_p.append(grad)
        ref = symbols(reference)
        costs.append(python_edit(symbols(cand), ref) / max(len(ref), 1))
    scaled = alpha * np.array(log_p)
    q = np.exp(scaled - scaled.max())
    q /= q.sum()
    risk = float(q @ np.array(costs))
    gradient = sum(alpha * qc * (cost - risk) * g
                   for qc, cost, g in zip(q, costs, d_log_p, strict=True))
    return risk, gradient


@pytest.fixture(scope="module")
def risk_fn():
    settings = ml_collections.ConfigDict({"alpha": 0.7, "cost": "edit"})

    def risk(table, candidates, valid, reference):
        return mrt.candidate_risk(BIGRAM, {"params": table}, (), candidates, valid, reference,
                                  settings).sum()

    return jax.jit(jax.value_and_grad(risk))


@pytest.mark.parametrize("row", [0, 1])
def test_risk_and_gradient_equal_numpy_over_enumerated_candidates(risk_fn, row):
    table = np.asarray(jax.random.normal(jax.random.PRNGKey(row), (VOCAB, VOCAB)), np.float64)
    reference = REFERENCES[row:row + 1]
    valid = np.ones((1, len(CANDIDATES)), bool)
    risk, gradient = risk_fn(jnp.asarray(table, jnp.float32), CANDIDATES[None], valid, reference)
    expected_risk, expected_gradient = numpy_risk_and_gradient(table, reference[0], 0.7)
    assert 0 < expected_risk < 2
    assert float(risk) == pytest.approx(expected_risk, rel=1e-5)
    np.testing.assert_allclose(np.asarray(gradient), expected_gradient, rtol=1e-4, atol=1e-6)


def test_a_single_candidate_equal_to_the_reference_has_zero_risk(risk_fn):
    table = jnp.asarray(np.random.default_rng(0).normal(size=(VOCAB, VOCAB)), jnp.float32)
    risk, gradient = risk_fn(table, REFERENCES[:, None], np.ones((2, 1), bool), REFERENCES)
    assert float(risk) == 0.0
    assert not np.asarray(gradient).any()


def test_the_step_loss_mixes_token_loss_and_token_weighted_risk(monkeypatch):
    """(1 - w) * cross-entropy sum + w * sum over rows of risk * reference tokens, with the
    candidates fixed to the enumerated ones (the bigram table has no decoder step to sample)."""
    table = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (VOCAB, VOCAB)), np.float64)
    model = types.SimpleNamespace(
        special_tokens=SpecialTokens(),
        encode=lambda variables, src, **kw: ((), {}),
        forward=lambda variables, encoded, inputs, update_stats=False, **kw: (
            (variables["params"][inputs], {}) if update_stats else variables["params"][inputs]),
    )
    fixed = np.broadcast_to(CANDIDATES, (2, *CANDIDATES.shape))
    monkeypatch.setattr(mrt, "draw_candidates", lambda *args: (
        jnp.asarray(fixed), jnp.ones(fixed.shape[:2], bool)))
    config = default.get_config()
    config.max_tgt_len = LENGTH
    config.mrt.update(weight=0.3, alpha=0.7)
    sums = step.make_batch_sums(model, TeacherForcing.from_config(config.teacher_forcing), config)
    batch = {"src_tokens": jnp.asarray(REFERENCES), "tgt_tokens": jnp.asarray(REFERENCES)}
    loss, (counts, _) = sums(jnp.asarray(table, jnp.float32), {}, batch, jax.random.PRNGKey(0), 0)

    inputs = np.concatenate([np.full((2, 1), BOS), REFERENCES[:, :-1]], 1)
    weights = metrics.token_weights(REFERENCES, pad=PAD)
    cross_entropy = float(metrics.cross_entropy_sum(table[inputs], REFERENCES, weights, 0.0))
    risks = [numpy_risk_and_gradient(table, ref, 0.7)[0] for ref in REFERENCES]
    risk_sum = sum(r * int((ref != PAD).sum()) for r, ref in zip(risks, REFERENCES, strict=True))
    assert float(counts["mrt_risk"]) == pytest.approx(risk_sum, rel=1e-5)
    assert float(loss) == pytest.approx(0.7 * cross_entropy + 0.3 * risk_sum, rel=1e-5)


@pytest.mark.parametrize("fields, message", [
    (dict(cost="wer"), "mrt.cost='wer': must be one of"),
    (dict(weight=1.5), r"mrt.weight=1.5: must be in \[0, 1\]"),
    (dict(num_candidates=0), "mrt.num_candidates=0: must be > 0"),
    (dict(alpha=0.0), "mrt.alpha=0.0: must be > 0"),
    (dict(candidates="nucleus"), "mrt.candidates='nucleus': must be one of"),
    (dict(weight=0.5, pack=True), "unpacked rows"),
])
def test_bad_mrt_config_fails_naming_the_key(fields, message):
    config = default.get_config()
    if fields.pop("pack", False):
        config.pack, config.model.type = True, "transformer"
    config.mrt.update(fields)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_resuming_a_run_saved_before_mrt_refuses_turning_it_on():
    refused, _ = resume.config_changes({}, {"mrt": {"weight": 0.3}})
    assert set(refused) == {"mrt.weight"}
    assert not resume.config_changes({}, {"mrt": {"weight": 0.0}})[0]


def test_a_train_step_with_sampled_candidates_is_finite_and_moves_the_parameters():
    _, _, _, _, initial, state, losses = train_tiny((("mrt.weight", 0.5),), steps=2)
    assert np.isfinite(losses).all()
    moved = jax.tree.map(lambda a, b: bool((np.asarray(a) != np.asarray(b)).any()),
                         initial.params, state.params)
    assert any(jax.tree.leaves(moved))


def python_beam(log_probs_of, k: int, max_len: int, eos: int) -> list[tuple[int, ...]]:
    """A width-k beam search in plain Python ranked by log-probability (no length penalty):
    at each step the k best extensions of the live prefixes that end in EOS (or any at the
    length limit) join the finished ones, the k best others stay live; the k best finished,
    best first. `log_probs_of(prefixes)` gives each prefix's next-token log-probabilities."""
    live, finished = [((), 0.0)], []
    for position in range(max_len):
        rows = log_probs_of([prefix for prefix, _ in live])
        extensions = sorted(((prefix + (token,), score + float(rows[i][token]))
                             for i, (prefix, score) in enumerate(live)
                             for token in range(len(rows[i])) if np.isfinite(rows[i][token])),
                            key=lambda c: -c[1])
        finished += [c for c in extensions[:k] if c[0][-1] == eos or position + 1 == max_len]
        live = [c for c in extensions if c[0][-1] != eos][:k]
    return [tokens for tokens, _ in sorted(finished, key=lambda c: -c[1])[:k]]


def test_beam_candidates_are_an_independent_beam_searchs_best_k():
    """draw_candidates(how="beam") against a plain-Python beam search that scores each prefix
    by the model's teacher-forced `forward` (no decoder cache, no step function)."""
    k, src_len, max_len = 3, 4, 4
    trained = untrained_symbol_model(6, 2, src_len, max_len)  # mixed lengths
    model, variables, specials = trained.model, trained.variables, trained.model.special_tokens
    src = np.array([[4, 5, 6, 7], [8, 4, 4, PAD]], np.int32)
    tokens, valid = jax.jit(lambda v, s: mrt.draw_candidates(
        model, v, s, max_len, jax.random.PRNGKey(0), k, "beam"))(variables, src)

    @jax.jit
    def forward(row_src, inputs):  # [1, src_len], [k, max_len] -> log-probs [k, max_len, vocab]
        encoded = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), model.encode(variables, row_src))
        logits = model.forward(variables, encoded, inputs)
        never = np.isin(np.arange(logits.shape[-1]), specials.never_emitted)
        return jax.nn.log_softmax(jnp.where(never, -jnp.inf, logits.astype(jnp.float32)))

    for row in range(len(src)):
        def log_probs_of(prefixes, row=row):
            inputs = np.full((k, max_len), PAD, np.int32)
            for i, prefix in enumerate(prefixes):
                inputs[i, :len(prefix) + 1] = (specials.bos, *prefix)
            out = np.asarray(forward(src[row:row + 1], inputs), np.float64)
            return [out[i, len(prefix)] for i, prefix in enumerate(prefixes)]

        expected = python_beam(log_probs_of, k, max_len, specials.eos)
        assert np.asarray(valid[row]).all()
        assert [tuple(int(t) for t in hyp if t != PAD) for hyp in np.asarray(tokens[row])] \
            == expected
