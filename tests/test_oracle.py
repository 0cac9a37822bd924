"""Oracle targets for sampled prefixes: against an edit-distance alignment in plain Python."""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from flax_s2s import metrics, oracle
from flax_s2s.forcing import TeacherForcing
from flax_s2s.models import decoder_inputs
from flax_s2s.special_tokens import SpecialTokens
from flax_s2s.training import step
from flax_s2s.training.config import ConfigError, validate_config

PAD, BOS, EOS = 0, 1, 2
A, B, C, D, X = 4, 5, 6, 7, 8
REF = [A, B, C, D, EOS]
LENGTH = 7  # two padding positions after the reference


def python_oracle(read: list[int], ref: list[int]) -> list[int]:
    """Targets by the full edit-distance table of each prefix read[1..t] against ref, in loops:
    the reference token after the largest j < len(ref) with the least distance."""
    targets = []
    for t in range(len(read)):
        prefix = read[1:t + 1]
        table = [[0] * (len(ref) + 1) for _ in range(len(prefix) + 1)]
        for i in range(len(prefix) + 1):
            for j in range(len(ref) + 1):
                if i == 0 or j == 0:
                    table[i][j] = i + j
                else:
                    table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1,
                                      table[i - 1][j - 1] + (prefix[i - 1] != ref[j - 1]))
        last = table[len(prefix)][:len(ref)]
        best = max(j for j in range(len(ref)) if last[j] == min(last))
        targets.append(ref[best])
    return targets


# read tokens (BOS first), and the targets by hand at the reference's positions
CASES = {
    "gold": ([BOS, A, B, C, D, EOS, PAD], [A, B, C, D, EOS]),
    "insertion": ([BOS, A, B, X, C, D, EOS], [A, B, C, D, D]),  # after "abxc": d, not EOS
    "deletion": ([BOS, A, C, D, EOS, PAD, PAD], [A, B, D, EOS, EOS]),  # after "ac": d, not c
    "substitution": ([BOS, A, X, C, D, EOS, PAD], [A, B, C, D, EOS]),
}


@pytest.fixture(scope="module")
def targets():
    reads = np.array([read for read, _ in CASES.values()], np.int32)
    tgt = np.array([REF + [PAD] * (LENGTH - len(REF))] * len(CASES), np.int32)
    got = jax.jit(oracle.oracle_targets, static_argnums=2)(reads, tgt, PAD)
    return dict(zip(CASES, np.asarray(got), strict=True))


@pytest.mark.parametrize("case", list(CASES))
def test_targets_equal_a_plain_python_alignment_and_the_hand_written_ones(targets, case):
    read, by_hand = CASES[case]
    assert targets[case].tolist() == python_oracle(read, REF)
    assert targets[case][:len(REF)].tolist() == by_hand


def test_random_prefixes_of_random_references_match_the_python_alignment():
    rng = np.random.default_rng(0)
    rows, length = 16, 9
    tgt = np.zeros((rows, length), np.int32)
    for row, n in enumerate(rng.integers(1, length, rows)):
        tgt[row, :n - 1] = rng.integers(4, 7, n - 1)  # 3 symbols: many ties and repeats
        tgt[row, n - 1] = EOS
    reads = np.concatenate([np.full((rows, 1), BOS), rng.integers(2, 7, (rows, length - 1))], 1)
    got = np.asarray(oracle.oracle_targets(reads, tgt, PAD))
    for row in range(rows):
        ref = [int(x) for x in tgt[row] if x != PAD]
        n = len(ref)
        assert got[row, :n].tolist() == python_oracle(reads[row].tolist(), ref)[:n]


def test_gold_prefixes_give_the_gold_targets_in_the_train_step():
    """With nothing sampled (p = 1 through the scheduled-sampling path), oracle targets are gold:
    the step's loss equals teacher forcing's."""
    vocab = 9
    tgt = jnp.array([[A, B, C, EOS, PAD], [D, D, A, B, EOS], [C, EOS, PAD, PAD, PAD]], jnp.int32)
    tgt_tokens = np.asarray(tgt)
    gold = np.asarray(oracle.oracle_targets(decoder_inputs(tgt, BOS), tgt, PAD))
    real = tgt_tokens != PAD
    np.testing.assert_array_equal(gold[real], tgt_tokens[real])

    table = jax.random.normal(jax.random.PRNGKey(0), (vocab, vocab))
    model = types.SimpleNamespace(  # logits a function of the token read: a bigram model
        special_tokens=SpecialTokens(),
        encode=lambda variables, src, **kw: ((), {}),  # (encoded, batch_stats)
        forward=lambda variables, encoded, inputs, **kw: variables["params"][inputs],
        has_parallel_forward=True,
    )
    config = default.get_config()
    config.teacher_forcing.update(schedule="constant", p=1.0, mode="two_pass")
    forcing = TeacherForcing.from_config(config.teacher_forcing)
    forcing = dataclasses.replace(forcing, always_gold=False)  # p = 1 through the sampling path
    config.teacher_forcing.oracle_targets = True
    batch = {"src_tokens": tgt, "tgt_tokens": tgt}
    sums = step.make_batch_sums(model, forcing, config)
    loss, _ = sums(table, {}, batch, jax.random.PRNGKey(1), 0)
    weights = metrics.token_weights(tgt, pad=PAD)
    expected = metrics.cross_entropy_sum(table[decoder_inputs(tgt, BOS)], tgt, weights, 0.0)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_sampled_prefixes_train_on_the_oracles_targets_in_the_train_step():
    """p = 0, two passes, on a bigram model: the decoder reads its argmax tokens after the gold
    ones; the loss is the cross-entropy against the plain-Python oracle's targets."""
    vocab = 9
    tgt = np.array([[A, B, C, EOS, PAD], [D, D, A, B, EOS], [C, EOS, PAD, PAD, PAD]], np.int32)
    table = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (vocab, vocab)))
    model = types.SimpleNamespace(
        special_tokens=SpecialTokens(),
        encode=lambda variables, src, **kw: ((), {}),
        forward=lambda variables, encoded, inputs, **kw: variables["params"][inputs],
        has_parallel_forward=True,
    )
    config = default.get_config()
    config.teacher_forcing.update(schedule="constant", p=0.0, mode="two_pass",
                                  oracle_targets=True)
    forcing = TeacherForcing.from_config(config.teacher_forcing)
    sums = step.make_batch_sums(model, forcing, config)
    batch = {"src_tokens": jnp.asarray(tgt), "tgt_tokens": jnp.asarray(tgt)}
    loss, (counts, _) = sums(jnp.asarray(table), {}, batch, jax.random.PRNGKey(1), 0)

    gold_inputs = np.concatenate([np.full((3, 1), BOS), tgt[:, :-1]], 1)
    allowed = table.copy()
    allowed[:, [PAD, BOS]] = -np.inf  # never emitted
    own = allowed[gold_inputs].argmax(-1)
    reads = np.concatenate([np.full((3, 1), BOS), own[:, :-1]], 1)
    expected, changed = 0.0, 0
    for row in range(3):
        ref = [int(x) for x in tgt[row] if x != PAD]
        targets = python_oracle(reads[row].tolist(), ref)
        for t in range(len(ref)):
            logits = table[reads[row, t]]
            expected -= logits[targets[t]] - np.log(np.exp(logits).sum())
            changed += targets[t] != ref[t]
    assert changed > 0  # the oracle moved some targets off the gold position's
    assert float(loss) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("fields, message", [
    (dict(oracle_targets=True), "needs scheduled sampling"),
    (dict(oracle_targets=True, p=0.5, mode="two_pass", pack=True), "unpacked rows"),
])
def test_bad_oracle_config_fails_naming_the_key(fields, message):
    config = default.get_config()
    if fields.pop("pack", False):
        config.pack, config.model.type = True, "transformer"
    config.teacher_forcing.update(fields)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)
