"""Decoder-input noise: the realised replacement rate, what is never replaced, the config."""

import types

import jax
import numpy as np
import pytest

from configs import default
from flax_s2s import input_noise, resume
from flax_s2s.models import decoder_inputs
from flax_s2s.special_tokens import SpecialTokens
from flax_s2s.training import step
from flax_s2s.training.config import ConfigError, validate_config

SPECIALS = SpecialTokens()  # pad 0, bos 1, eos 2, unk 3
VOCAB, ROWS, LENGTH = 13, 512, 40
NON_SPECIAL = np.arange(4, VOCAB)


def _targets(rng: np.random.Generator) -> np.ndarray:
    """[ROWS, LENGTH] targets of random lengths: non-special tokens, EOS, then padding."""
    targets = np.zeros((ROWS, LENGTH), np.int32)
    for row, length in enumerate(rng.integers(1, LENGTH, ROWS)):
        targets[row, :length] = rng.choice(NON_SPECIAL, length)
        targets[row, length] = SPECIALS.eos
    return targets


@pytest.fixture(scope="module")
def noised():
    inputs = np.asarray(decoder_inputs(_targets(np.random.default_rng(0)), SPECIALS.bos))
    noisy, replaced = jax.jit(input_noise.noisy_inputs, static_argnums=(2, 3, 4))(
        inputs, jax.random.PRNGKey(7), 0.3, VOCAB, SPECIALS
    )
    return inputs, np.asarray(noisy), np.asarray(replaced)


def test_realised_rate_is_within_3_standard_errors_of_the_rate(noised):
    inputs, noisy, _ = noised
    rate = 0.3
    # Replaceable: real inputs after position 0 (counted from the inputs, not from the module).
    replaceable = inputs != SPECIALS.pad
    replaceable[:, 0] = False
    # A replacement draws one of the 9 non-special ids uniformly, so it changes a non-special
    # input with probability 8/9 and an EOS input always.
    non_special = replaceable & (inputs >= 4)
    change = rate * (len(NON_SPECIAL) - 1) / len(NON_SPECIAL)
    changed = (noisy != inputs)[non_special]
    stderr = np.sqrt(change * (1 - change) / changed.size)
    assert changed.size > 5000
    assert abs(changed.mean() - change) < 3 * stderr
    eos = replaceable & (inputs == SPECIALS.eos)
    eos_changed = (noisy != inputs)[eos]
    assert abs(eos_changed.mean() - rate) < 3 * np.sqrt(rate * (1 - rate) / eos_changed.size)


def test_bos_and_padding_are_never_replaced_and_replacements_are_non_special(noised):
    inputs, noisy, replaced = noised
    assert (noisy[:, 0] == SPECIALS.bos).all()
    padding = inputs == SPECIALS.pad
    assert (noisy[padding] == SPECIALS.pad).all() and not replaced[padding].any()
    drawn = noisy[(noisy != inputs)]
    assert set(np.unique(drawn)) == set(NON_SPECIAL)  # every non-special id, nothing else


def test_packed_rows_keep_each_examples_bos():
    tgt = np.array([[5, 6, 2, 7, 8, 9, 2, 0]] * 64, np.int32)
    segment_ids = np.array([[1, 1, 1, 2, 2, 2, 2, 0]] * 64, np.int32)
    positions = np.array([[0, 1, 2, 0, 1, 2, 3, 0]] * 64, np.int32)
    inputs = np.asarray(decoder_inputs(tgt, SPECIALS.bos, segment_ids))
    noisy, _ = input_noise.noisy_inputs(inputs, jax.random.PRNGKey(3), 0.9, VOCAB, SPECIALS,
                                        positions)
    noisy = np.asarray(noisy)
    assert (noisy[:, [0, 3]] == SPECIALS.bos).all() and (noisy[:, 7] == SPECIALS.pad).all()
    assert (noisy[:, [1, 2, 4, 5, 6]] != inputs[:, [1, 2, 4, 5, 6]]).any()


def test_the_train_step_reads_noise_drawn_from_its_key_only_when_asked():
    model = types.SimpleNamespace(special_tokens=SPECIALS,
                                  module=types.SimpleNamespace(tgt_vocab_size=VOCAB))
    tgt = _targets(np.random.default_rng(1))[:8]
    rng = jax.random.PRNGKey(11)
    config = default.get_config()
    gold = np.asarray(decoder_inputs(tgt, SPECIALS.bos))
    np.testing.assert_array_equal(step._teacher_inputs(model, config, tgt, None, rng), gold)
    config.teacher_forcing.input_noise = 0.5
    got = np.asarray(step._teacher_inputs(model, config, tgt, None, rng))
    expected, _ = input_noise.noisy_inputs(gold, input_noise.noise_key(rng), 0.5, VOCAB, SPECIALS)
    np.testing.assert_array_equal(got, np.asarray(expected))
    assert (got != gold).any()


@pytest.mark.parametrize("fields, message", [
    (dict(input_noise=1.0), "teacher_forcing.input_noise=1.0: must be in"),
    (dict(input_noise=-0.1), "teacher_forcing.input_noise"),
    (dict(input_noise=0.1, schedule="constant", p=0.5), "full teacher forcing"),
])
def test_bad_input_noise_config_fails_naming_the_key(fields, message):
    config = default.get_config()
    config.teacher_forcing.update(fields)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_resuming_a_run_saved_before_the_noise_and_oracle_keys_refuses_turning_them_on():
    saved = {"teacher_forcing": {"p": 1.0}}
    refused, _ = resume.config_changes(
        saved, {"teacher_forcing": {"p": 1.0, "input_noise": 0.2, "oracle_targets": True}})
    assert set(refused) == {"teacher_forcing.input_noise", "teacher_forcing.oracle_targets"}
    refused, _ = resume.config_changes(
        saved, {"teacher_forcing": {"p": 1.0, "input_noise": 0.0, "oracle_targets": False}})
    assert not refused
