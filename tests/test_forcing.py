"""Scheduled sampling: schedules, the per-step mask, both unrolls, gradients, resume and the
exposure-bias diagnostics."""

import dataclasses
import functools
import math

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROLLED, tiny_config

from configs import addition_lstm_ss, default
from flax_s2s import decoding, forcing, metrics, schedules, training
from flax_s2s.checkpoint import Checkpointer
from flax_s2s.data import pipeline
from flax_s2s.data.vocab import BOS, PAD, SymbolVocab
from flax_s2s.models import build_model, decoder_inputs
from flax_s2s.models.unroll import FULL_UNROLL_MAX
from flax_s2s.special_tokens import SpecialTokens
from flax_s2s.training.config import ConfigError, validate_config

VOCAB, TGT_LEN = 9, 6
SRC = np.array([[4, 5, 6, 0], [7, 8, 0, 0], [4, 4, 4, 4], [8, 7, 6, 5], [5, 0, 0, 0]], np.int32)
TGT = np.array([[4, 5, 2, 0, 0, 0], [6, 6, 6, 2, 0, 0], [7, 2, 0, 0, 0, 0],
                [8, 7, 6, 5, 4, 2], [5, 5, 2, 0, 0, 0]], np.int32)


def tf_config(**fields):
    config = default.get_config().teacher_forcing
    config.update(fields)
    return config


# --- schedules -------------------------------------------------------------------------------

def _inv_sigmoid(k: float, step: int) -> float:
    """k / (k + exp(step / k)), which is 0 to double precision once exp passes 1e300."""
    return 0.0 if step / k > 700 else k / (k + math.exp(step / k))


SCHEDULE_CASES = [
    (dict(schedule="constant", p=0.3), lambda s: 0.3),
    (dict(schedule="linear", k=0.9, slope=1e-3, floor=0.1), lambda s: max(0.1, 0.9 - 1e-3 * s)),
    (dict(schedule="linear", k=1.0, slope=3e-4, floor=0.0), lambda s: max(0.0, 1.0 - 3e-4 * s)),
    (dict(schedule="exponential", k=0.999, floor=0.05), lambda s: max(0.05, 0.999**s)),
    (dict(schedule="exponential", k=0.99, floor=0.0), lambda s: max(0.0, 0.99**s)),
    (dict(schedule="inverse_sigmoid", k=100.0, floor=0.0), lambda s: _inv_sigmoid(100.0, s)),
    (dict(schedule="inverse_sigmoid", k=1.0, floor=0.2), lambda s: max(0.2, _inv_sigmoid(1.0, s))),
]
STEPS = [0, 1, 7, 100, 999, 1234, 5000, 100_000]


@pytest.mark.parametrize("fields, closed_form", SCHEDULE_CASES)
def test_schedule_equals_closed_form_on_ints_arrays_and_traced(fields, closed_form):
    schedule = schedules.make_schedule(tf_config(**fields))
    expected = np.array([closed_form(s) for s in STEPS])
    from_ints = np.array([float(schedule(s)) for s in STEPS])
    from_array = np.asarray(schedule(jnp.asarray(STEPS, jnp.int32)))
    traced = np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(STEPS, jnp.int32)))
    for got in (from_ints, from_array, traced):
        # float32: k = 0.999 is stored with relative error ~3e-8, which k ** 1234 multiplies by 1234
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("midpoint", [0.5, 3.0, 750.0, 35_000.0])
def test_inverse_sigmoid_k_puts_one_half_at_the_midpoint(midpoint):
    k = schedules.inverse_sigmoid_k(midpoint)
    assert k >= 1.0
    assert _inv_sigmoid(k, midpoint) == pytest.approx(0.5, abs=1e-9)
    assert _inv_sigmoid(k, 0.9 * midpoint) > 0.5 > _inv_sigmoid(k, 1.1 * midpoint)


@pytest.mark.parametrize("midpoint", [0, -3.0, math.inf, math.nan])
def test_inverse_sigmoid_k_refuses_a_midpoint_that_is_not_positive_and_finite(midpoint):
    with pytest.raises(ValueError, match=f"midpoint_step={midpoint}: must be finite and > 0"):
        schedules.inverse_sigmoid_k(midpoint)


@pytest.mark.parametrize("fields, closed_form", SCHEDULE_CASES)
def test_schedule_is_non_increasing_respects_floor_and_finite_at_1e9(fields, closed_form):
    schedule = schedules.make_schedule(tf_config(**fields))
    values = np.asarray(schedule(jnp.arange(0, 200_000, 7)))
    assert np.all(np.diff(values) <= 0)
    assert values.min() >= tf_config(**fields).floor
    assert values.max() <= 1.0
    for step in (10**9, jnp.asarray(10**9, jnp.int32)):
        value = float(schedule(step))
        assert math.isfinite(value) and value >= tf_config(**fields).floor
        assert value == pytest.approx(closed_form(10**9), abs=1e-6)


# --- the mask --------------------------------------------------------------------------------

def _masks(teacher_forcing: forcing.TeacherForcing, rng, steps, shape):
    """The masks train steps `steps` draw from a state key `rng`. bool [len(steps), *shape]."""
    def one(step):
        return teacher_forcing.mask(jax.random.fold_in(rng, step), step, shape)
    return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(steps)))


def test_mask_rate_matches_schedule_within_3_standard_errors():
    teacher_forcing = forcing.TeacherForcing.from_config(
        tf_config(schedule="linear", k=1.0, slope=1.0 / 400)
    )
    steps = np.arange(400)
    masks = _masks(teacher_forcing, jax.random.PRNGKey(3), steps, (16, 8))
    assert masks[:, :, 0].all(), "position 0 always reads BOS"
    drawn = masks[:, :, 1:].reshape(len(steps), -1)  # positions 1.. are the random ones
    p = np.asarray(teacher_forcing.prob(jnp.asarray(steps)), np.float64)
    n = drawn.shape[1]
    z = (drawn.sum() - n * p.sum()) / math.sqrt(n * (p * (1 - p)).sum())
    assert abs(z) < 3, z
    # and step by step on the decaying part: the rate follows p(step), not just its mean
    early, late = drawn[:100].mean(), drawn[300:].mean()
    assert early > 0.8 and late < 0.2, (early, late)


def test_mask_is_a_function_of_key_and_step_and_varies_within_a_batch():
    teacher_forcing = forcing.TeacherForcing.from_config(tf_config(schedule="constant", p=0.5))
    rng, shape = jax.random.PRNGKey(0), (16, 8)
    first = _masks(teacher_forcing, rng, [5, 6], shape)
    again = _masks(teacher_forcing, rng, [5, 6], shape)
    np.testing.assert_array_equal(first, again)
    assert (first[0] != first[1]).any(), "different steps, different masks"
    other_key = _masks(teacher_forcing, jax.random.PRNGKey(1), [5], shape)
    assert (other_key[0] != first[0]).any()
    mask = first[0][:, 1:]
    assert len({row.tobytes() for row in mask}) > 1, "rows (examples) differ"
    assert len({col.tobytes() for col in mask.T}) > 1, "columns (positions) differ"


def test_mask_key_is_not_a_dropout_key():
    step_rng = jax.random.PRNGKey(7)
    mask_key, choice_key = forcing.forcing_keys(step_rng)
    dropout_keys = [np.asarray(k) for k in jax.random.split(step_rng)]
    for key in (mask_key, choice_key):
        assert not any(np.array_equal(np.asarray(key), k) for k in dropout_keys)


# --- schedules over output positions ----------------------------------------------------------

POSITION_CASES = [
    (dict(position_schedule="exponential", position_k=0.9), lambda t: 0.9**t),
    (dict(position_schedule="exponential", position_k=0.5, position_floor=0.2),
     lambda t: max(0.2, 0.5**t)),
    (dict(position_schedule="linear", position_k=1.0, position_slope=0.15, position_floor=0.1),
     lambda t: max(0.1, 1.0 - 0.15 * t)),
    (dict(position_schedule="inverse_sigmoid", position_k=3.0), lambda t: _inv_sigmoid(3.0, t)),
]
STEP_PART = (dict(schedule="linear", k=1.0, slope=1e-3, floor=0.0), lambda s: max(0.0, 1 - 1e-3 * s))


@pytest.mark.parametrize("combine", schedules.COMBINES)
@pytest.mark.parametrize("fields, by_position", POSITION_CASES)
def test_position_schedule_equals_closed_form_at_several_steps_and_positions(
    fields, by_position, combine
):
    step_fields, by_step = STEP_PART
    teacher_forcing = forcing.TeacherForcing.from_config(
        tf_config(**step_fields, **fields, position_combine=combine)
    )
    assert not teacher_forcing.always_gold
    length = 12
    prob = jax.jit(teacher_forcing.prob_by_position, static_argnums=1)
    for step in (0, 100, 450, 2000):
        expected = [(min if combine == "min" else (lambda a, b: a * b))(by_step(step), by_position(t))
                    for t in range(length)]
        for got in (teacher_forcing.prob_by_position(step, length), prob(jnp.asarray(step), length)):
            np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-7)


def test_position_schedule_alone_leaves_teacher_forcing_only_at_position_zero():
    teacher_forcing = forcing.TeacherForcing.from_config(
        tf_config(position_schedule="exponential", position_k=0.8)
    )
    assert not teacher_forcing.always_gold, "p = 1 over steps, but not over positions"
    np.testing.assert_allclose(np.asarray(teacher_forcing.prob_by_position(10**6, 4)),
                               [1.0, 0.8, 0.64, 0.512], rtol=1e-6)


def test_mask_rate_by_position_within_3_standard_errors_and_position_zero_gold():
    teacher_forcing = forcing.TeacherForcing.from_config(
        tf_config(schedule="constant", p=0.9, position_schedule="linear", position_k=1.0,
                  position_slope=0.1, position_floor=0.05)
    )
    steps, shape = np.arange(300), (32, 12)
    masks = _masks(teacher_forcing, jax.random.PRNGKey(5), steps, shape)
    assert masks[:, :, 0].all(), "position 0 always reads BOS"
    n = len(steps) * shape[0]
    for t in range(1, shape[1]):
        p = 0.9 * max(0.05, 1.0 - 0.1 * t)
        rate = masks[:, :, t].mean()
        assert abs(rate - p) < 3 * math.sqrt(p * (1 - p) / n), (t, rate, p)
    assert masks[:, :, 1].mean() > masks[:, :, -1].mean() + 0.5


def test_masks_without_a_position_schedule_are_the_scalar_draw_of_before():
    """Runs without a position schedule draw exactly what a scalar p drew (older runs reproduce),
    and so does a position schedule that is flat at 1."""
    rng, shape, steps = jax.random.PRNGKey(9), (16, 8), [3, 4]
    scalar = np.stack([np.asarray(forcing.draw_mask(
        forcing.forcing_keys(jax.random.fold_in(rng, step))[0], 0.6, shape)) for step in steps])
    plain = forcing.TeacherForcing.from_config(tf_config(schedule="constant", p=0.6))
    flat = forcing.TeacherForcing.from_config(
        tf_config(schedule="constant", p=0.6, position_schedule="linear", position_k=1.0,
                  position_slope=1e-9)
    )
    assert 0 < scalar[:, :, 1:].mean() < 1
    np.testing.assert_array_equal(_masks(plain, rng, steps, shape), scalar)
    np.testing.assert_array_equal(_masks(flat, rng, steps, shape), scalar)


# --- unrolls on the LSTM ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def lstm():
    config = default.get_config()
    config.model.update(emb_dim=8, hidden_dim=16, attention_dim=8, dropout_rate=0.2,
                        bidirectional=False)  # a smaller graph: faster compiles
    model = build_model(config, VOCAB, VOCAB)
    variables = jax.jit(model.init)(jax.random.PRNGKey(1), SRC, TGT)
    params = variables["params"]
    # Sharpen the output layer so that greedy rows end at different steps.
    params["output_proj"]["kernel"] = params["output_proj"]["kernel"] * 8
    variables = {"params": params}
    return model, variables, jax.jit(model.encode)(variables, SRC)


def _unroll(mode, model, variables, encoded, mask, key=None, **static):
    """One jit-compiled unroll over the gold inputs of TGT: (logits, read tokens)."""
    unroll = jax.jit(functools.partial(forcing.UNROLLS[mode], model, **static))
    return unroll(variables, encoded, decoder_inputs(TGT), mask, key)


def _loss(logits):
    weights = metrics.token_weights(jnp.asarray(TGT))
    return float(metrics.cross_entropy_sum(logits, jnp.asarray(TGT), weights) / weights.sum())


def test_p1_scheduled_loss_equals_parallel_teacher_forced_loss(lstm):
    model, variables, encoded = lstm
    step_rng, dropout_rng = jax.random.PRNGKey(4), jax.random.PRNGKey(5)  # dropout is on

    def logits(teacher_forcing):
        return jax.jit(functools.partial(teacher_forcing.train_logits, model))(
            variables, encoded, TGT, step=3, step_rng=step_rng, dropout_rng=dropout_rng
        )[0]

    parallel = forcing.TeacherForcing.from_config(tf_config(schedule="constant", p=1.0))
    assert parallel.always_gold
    expected = logits(parallel)
    for mode in forcing.MODES:
        # the same p = 1, but through the scan / the two passes
        scheduled = dataclasses.replace(parallel, always_gold=False, mode=mode)
        got = logits(scheduled)
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)
        assert _loss(got) == pytest.approx(_loss(expected), rel=1e-6)


def test_p0_argmax_reads_greedy_decodings_own_outputs(lstm):
    model, variables, encoded = lstm
    greedy_tokens, lengths, _ = decoding.greedy(model, variables, SRC, max_len=TGT_LEN)
    greedy_tokens = np.asarray(greedy_tokens)
    assert len(set(np.asarray(lengths).tolist())) > 1
    mask = forcing.draw_mask(jax.random.PRNGKey(0), 0.0, TGT.shape)
    assert not np.asarray(mask)[:, 1:].any()
    _, read = _unroll("exact", model, variables, encoded, mask, choice="argmax")
    read = np.asarray(read)
    assert (read[:, 0] == BOS).all()
    # position t reads what greedy emitted at t - 1, up to and including its EOS (greedy pads after)
    emitted = greedy_tokens[:, :-1]
    compared = emitted != PAD
    assert compared.sum() >= 12
    np.testing.assert_array_equal(read[:, 1:][compared], emitted[compared])


def test_p0_two_pass_reads_teacher_forced_argmax_shifted(lstm):
    model, variables, encoded = lstm
    mask = forcing.draw_mask(jax.random.PRNGKey(0), 0.0, TGT.shape)
    logits, read = _unroll("two_pass", model, variables, encoded, mask)
    forward = jax.jit(model.forward)
    tf_logits = np.asarray(forward(variables, encoded, decoder_inputs(TGT))).copy()
    tf_logits[..., [PAD, BOS]] = -np.inf  # never emitted
    expected = np.concatenate([np.full((len(SRC), 1), BOS), tf_logits.argmax(-1)[:, :-1]], 1)
    np.testing.assert_array_equal(np.asarray(read), expected)
    np.testing.assert_allclose(
        np.asarray(logits), np.asarray(forward(variables, encoded, expected)), atol=1e-5
    )


def test_sample_at_low_temperature_is_argmax_and_at_high_temperature_is_not(lstm):
    model, variables, encoded = lstm
    key = jax.random.PRNGKey(2)
    mask = forcing.draw_mask(key, 0.0, TGT.shape)
    _, argmax_read = _unroll("exact", model, variables, encoded, mask)
    _, cold = _unroll("exact", model, variables, encoded, mask, key, choice="sample",
                      temperature=1e-4)
    _, hot = _unroll("exact", model, variables, encoded, mask, key, choice="sample",
                     temperature=100.0)
    np.testing.assert_array_equal(np.asarray(cold), np.asarray(argmax_read))
    assert (np.asarray(hot) != np.asarray(argmax_read)).any()
    assert not np.isin(np.asarray(hot)[:, 1:], [PAD, BOS]).any(), "never reads PAD or BOS"


# --- exact mode: a scan without gradient + one parallel pass, against the graded scan ---------

# TGT padded past the full unroll: a rolled scan computes the same and compiles in a fraction
# of the time (padded positions weigh nothing in the loss)
ROLLED_TGT = np.pad(TGT, ((0, 0), (0, FULL_UNROLL_MAX + 1 - TGT_LEN)))


def _seam_model(kind: str, dropout_rate: float):
    config = default.get_config()
    config.model.dropout_rate = dropout_rate
    if kind == "transformer":
        config.model.update(type="transformer", d_model=16, num_heads=2, mlp_dim=32,
                            num_encoder_layers=1, num_decoder_layers=1, norm="layer")
    else:
        config.model.update(emb_dim=8, hidden_dim=16, attention_dim=8, bidirectional=False)
    model = build_model(config, VOCAB, VOCAB)
    return model, jax.jit(model.init)(jax.random.PRNGKey(1), SRC, ROLLED_TGT)


@functools.cache
def _both_exact_unrolls(kind: str, dropout_rate: float, choice: str, grads: bool = True):
    """(new, old) = (exact_unroll, scanned_unroll) outputs on one model at p = 1/2: logits, read
    tokens and (with `grads`, else None) the gradient of the loss, from one jit-compiled call."""
    model, variables = _seam_model(kind, dropout_rate)
    mask = forcing.draw_mask(jax.random.PRNGKey(3), 0.5, ROLLED_TGT.shape)
    dropout_rng = jax.random.PRNGKey(6) if dropout_rate else None

    def outputs(unroll):
        def loss(variables):
            encoded = model.encode(variables, SRC)
            logits, read = unroll(model, variables, encoded, decoder_inputs(ROLLED_TGT), mask,
                                  jax.random.PRNGKey(4), choice=choice, train=True,
                                  rng=dropout_rng)
            weights = metrics.token_weights(jnp.asarray(ROLLED_TGT))
            return metrics.cross_entropy_sum(logits, jnp.asarray(ROLLED_TGT), weights), (logits, read)

        if not grads:
            _, (logits, read) = jax.jit(loss)(variables)
            return jax.device_get((logits, read, None))
        (_, (logits, read)), gradient = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables)
        return jax.device_get((logits, read, gradient))

    return outputs(forcing.exact_unroll), outputs(forcing.scanned_unroll)


# Sampled own tokens on one model only: choosing them is the same code for every model.
@pytest.mark.parametrize("kind, choice",
                         [("lstm", "argmax"), ("transformer", "argmax"), ("transformer", "sample")])
def test_exact_unroll_equals_the_graded_scan_logits_and_gradients(kind, choice):
    (logits, read, grads), (ref_logits, ref_read, ref_grads) = _both_exact_unrolls(kind, 0.0, choice)
    np.testing.assert_array_equal(read, ref_read)
    real = (ROLLED_TGT != PAD)[:, :-1]  # read at positions 1.. that precede a real target
    assert (read[:, 1:] != decoder_inputs(ROLLED_TGT)[:, 1:])[real].any(), "some own tokens differ from gold"
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
    flat, ref_flat = (jax.tree.leaves(g) for g in (grads, ref_grads))
    assert len(flat) == len(ref_flat) > 3
    # Relative to the largest gradient: some are zero up to rounding (attention key biases, which
    # the softmax ignores), where only an absolute bound can hold.
    scale = max(np.abs(want).max() for want in ref_flat)
    for got, want in zip(flat, ref_flat, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_exact_unroll_reads_the_graded_scans_tokens_with_dropout(kind):
    (logits, read, _), (ref_logits, ref_read, _) = _both_exact_unrolls(kind, 0.3, "argmax", False)
    np.testing.assert_array_equal(read, ref_read)
    # dropout is really on: the logits differ from those of the model without it
    (no_dropout_logits, _, _), _ = _both_exact_unrolls(kind, 0.0, "argmax")
    assert np.abs(ref_logits - no_dropout_logits).max() > 1e-3
    if kind == "lstm":  # its forward is `step` scanned with the same dropout keys
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)


def test_exact_mode_grades_the_scan_for_rnns_and_the_parallel_pass_for_transformers():
    teacher_forcing = forcing.TeacherForcing.from_config(tf_config(schedule="constant", p=0.5))
    lstm_model, _ = _seam_model("lstm", 0.0)
    transformer_model, _ = _seam_model("transformer", 0.0)
    assert teacher_forcing.unroll(lstm_model) is forcing.scanned_unroll
    assert teacher_forcing.unroll(transformer_model) is forcing.exact_unroll
    forced = dataclasses.replace(teacher_forcing, graded_scan=True)
    assert forced.unroll(transformer_model) is forcing.scanned_unroll


# --- a toy model through the seam: gradients and what gets compiled --------------------------

TOY_TABLE = 3.0 * jax.nn.one_hot((jnp.arange(VOCAB) + 1) % VOCAB, VOCAB)  # fixed, not a parameter


@dataclasses.dataclass(frozen=True)
class ToyModel:
    """Position 0's logits are the parameter `w`; later logits are a fixed function of the token
    read, so positions >= 1 depend on `w` only through the tokens chosen from position 0 on."""

    has_parallel_forward = True
    special_tokens = SpecialTokens()

    def encode(self, variables, src_tokens, *, train=False, rng=None):
        return jnp.zeros((src_tokens.shape[0],))

    def init_cache(self, variables, encoded, max_len):
        return jnp.zeros((), jnp.int32)

    def step(self, variables, encoded, cache, prev_tokens, position, *, train=False, rng=None):
        first = jnp.broadcast_to(variables["params"]["w"], (encoded.shape[0], VOCAB))
        return jnp.where(position == 0, first, TOY_TABLE[prev_tokens]), cache + 1

    def forward(self, variables, encoded, tgt_inputs, *, train=False, rng=None):
        first = jnp.broadcast_to(variables["params"]["w"], (*tgt_inputs.shape, VOCAB))
        positions = jnp.arange(tgt_inputs.shape[1])[None, :, None]
        return jnp.where(positions == 0, first, TOY_TABLE[tgt_inputs])  # parallel: no scan


TOY_VARIABLES = {"params": {"w": jnp.linspace(-4.0, 4.0, VOCAB)}}  # sharp: samples follow w


@pytest.mark.parametrize("mode", forcing.MODES)
@pytest.mark.parametrize("choice", forcing.CHOICES)
def test_no_gradient_flows_through_the_chosen_tokens(mode, choice):
    model, gold = ToyModel(), decoder_inputs(TGT)
    mask = forcing.draw_mask(jax.random.PRNGKey(0), 0.0, TGT.shape)
    unroll = forcing.UNROLLS[mode]

    readout = jax.random.normal(jax.random.PRNGKey(2), (*TGT[:, 1:].shape, VOCAB))

    def later_positions_loss(variables):
        encoded = model.encode(variables, SRC)
        logits, _ = unroll(model, variables, encoded, gold, mask, jax.random.PRNGKey(1),
                           choice=choice)
        return jnp.sum(logits[:, 1:] * readout)  # a different value for (almost) any other tokens

    grads = jax.grad(later_positions_loss)(TOY_VARIABLES)
    np.testing.assert_array_equal(np.asarray(grads["params"]["w"]), 0.0)
    # the path exists in the forward direction: another w, other tokens read, another loss
    flipped = {"params": {"w": -TOY_VARIABLES["params"]["w"]}}
    assert float(later_positions_loss(flipped)) != float(later_positions_loss(TOY_VARIABLES))


def _primitives(jaxpr) -> set[str]:
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            names |= _primitives(sub)
    return names


@pytest.mark.parametrize(
    "fields, expect_scan",
    [(dict(schedule="constant", p=1.0), False),
     (dict(schedule="linear", k=1.0, slope=1e-3), True),
     (dict(schedule="constant", p=1.0 - 1e-6), True),
     (dict(schedule="linear", k=1.0, slope=1e-3, mode="two_pass"), False),
     (dict(position_schedule="exponential", position_k=0.99), True)],
)
def test_always_gold_is_decided_from_the_config_and_compiles_no_scan(fields, expect_scan):
    teacher_forcing = forcing.TeacherForcing.from_config(tf_config(**fields))

    def logits(variables, step):
        return teacher_forcing.train_logits(
            ToyModel(), variables, jnp.zeros((len(TGT),)), TGT, step=step,
            step_rng=jax.random.PRNGKey(0), dropout_rng=None,
        )

    jaxpr = jax.make_jaxpr(logits)(TOY_VARIABLES, jnp.asarray(0)).jaxpr
    assert ("scan" in _primitives(jaxpr)) == expect_scan


# --- config ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "fields, message",
    [(dict(choice="soft"), "later variant"),
     (dict(choice="greedy"), "teacher_forcing.choice"),
     (dict(schedule="exponential", k=1.0), "0 < k < 1"),
     (dict(schedule="inverse_sigmoid", k=0.5), "k >= 1"),
     (dict(schedule="linear", k=1.0, slope=0.0), "slope > 0"),
     (dict(schedule="cosine"), "teacher_forcing.schedule"),
     (dict(mode="parallel"), "teacher_forcing.mode"),
     (dict(p=1.5), "teacher_forcing.p"),
     (dict(temperature=0.0), "teacher_forcing.temperature"),
     (dict(position_schedule="cosine"), "teacher_forcing.position_schedule"),
     (dict(position_schedule="exponential", position_k=1.0), "0 < position_k < 1"),
     (dict(position_schedule="inverse_sigmoid", position_k=0.99), "position_k >= 1"),
     (dict(position_schedule="linear", position_k=1.0, position_slope=0.0), "position_slope > 0"),
     (dict(position_floor=-0.1), "teacher_forcing.position_floor"),
     (dict(position_combine="max"), "teacher_forcing.position_combine")],
)
def test_bad_teacher_forcing_config_fails_naming_the_key(fields, message):
    config = default.get_config()
    config.teacher_forcing.update(fields)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_scheduled_sampling_config_is_valid_and_decays():
    config = addition_lstm_ss.get_config()
    validate_config(config)
    teacher_forcing = forcing.TeacherForcing.from_config(config.teacher_forcing)
    assert not teacher_forcing.always_gold
    assert float(teacher_forcing.prob(0)) > 0.99
    assert float(teacher_forcing.prob(config.num_train_steps)) < 0.01


# --- training: resume and diagnostics --------------------------------------------------------

PAIRS = [(f"{a}+{b}", str(a + b)) for a, b in np.random.default_rng(0).integers(0, 999, (64, 2))]
CHARS = SymbolVocab.build("0123456789+")


@pytest.fixture(scope="module")
def ss_training():
    config = tiny_config(**{"teacher_forcing.schedule": "linear", "teacher_forcing.k": 0.9,
                            "teacher_forcing.slope": 0.05, "eval_batch_size": 64, **ROLLED})
    config.model.update(hidden_dim=16, attention_dim=8, emb_dim=8, bidirectional=False)
    examples = pipeline.tokenize(PAIRS, CHARS, CHARS, config.max_src_len, config.max_tgt_len)
    model = build_model(config, len(CHARS), len(CHARS))
    tx = training.make_optimizer(config)
    dataset = pipeline.train_dataset(examples, config.batch_size, config.seed)
    initial_state = training.create_train_state(model, tx, config.seed, dataset[0])
    # Strongly typed and committed to the device, as a checkpoint restores it: then one compile of
    # the train step serves the uninterrupted and the resumed run.
    initial_state = jax.device_put(
        initial_state.replace(step=jnp.asarray(0, jnp.int32)), jax.devices()[0]
    )
    train_step = jax.jit(training.make_train_step(model, tx, config))
    return config, examples, model, dataset, initial_state, train_step


def _steps(train_step, state, iterator, mask_fn, count):
    """Runs `count` steps; returns the state and each step's (mask, loss, p)."""
    drawn = []
    for _ in range(count):
        mask = mask_fn(jax.random.fold_in(state.rng, state.step), state.step)
        state, step_metrics = train_step(state, next(iterator))
        drawn.append((np.asarray(mask), float(step_metrics["loss"]),
                      float(step_metrics["teacher_forcing_prob"])))
    return state, drawn


def test_resumed_run_draws_the_same_masks_and_losses(ss_training, tmp_path):
    config, examples, model, dataset, state, train_step = ss_training
    teacher_forcing = forcing.TeacherForcing.from_config(config.teacher_forcing)
    shape = (config.batch_size, config.max_tgt_len)
    mask_fn = jax.jit(lambda step_rng, step: teacher_forcing.mask(step_rng, step, shape))
    iterator = pipeline.train_iterator(dataset)
    state, _ = _steps(train_step, state, iterator, mask_fn, 3)
    Checkpointer(str(tmp_path / "ckpt")).save(3, state, iterator, {})
    _, uninterrupted = _steps(train_step, state, iterator, mask_fn, 3)

    # "killed": a fresh process, whose state (all zeros here) is restored from the checkpoint
    fresh_iterator = pipeline.train_iterator(dataset)
    template = jax.tree.map(jnp.zeros_like, state)
    restored = Checkpointer(str(tmp_path / "ckpt")).restore(template, fresh_iterator)
    _, resumed = _steps(train_step, restored, fresh_iterator, mask_fn, 3)

    for step, ((mask_a, loss_a, p_a), (mask_b, loss_b, p_b)) in enumerate(
        zip(uninterrupted, resumed, strict=True), start=3
    ):
        np.testing.assert_array_equal(mask_a, mask_b)
        assert loss_a == loss_b and p_a == p_b == pytest.approx(0.9 - 0.05 * step)
        assert 0 < mask_a[:, 1:].mean() < 1
    # the losses do depend on the masks: another train key, another loss at the same step
    other = restored.replace(rng=jax.random.PRNGKey(12345))
    _, (( _, other_loss, _),) = _steps(
        train_step, other, pipeline.train_iterator(dataset), mask_fn, 1
    )
    assert other_loss != resumed[0][1]


def test_eval_reports_accuracy_by_position_under_both_decodings(ss_training):
    config, examples, model, dataset, state, _ = ss_training
    eval_step = training.make_evaluator(model, config)
    result = training.evaluate(eval_step, state.variables, examples, config.eval_batch_size)

    # reference: numpy over the whole split
    @jax.jit
    def teacher_forced_argmax(variables, src, tgt):
        encoded = model.encode(variables, src)
        return model.forward(variables, encoded, decoder_inputs(tgt)).argmax(-1)

    tf_predicted = np.asarray(teacher_forced_argmax(state.variables, examples.src, examples.tgt))
    fr_predicted, _, _ = decoding.greedy(model, state.variables, examples.src,
                                         max_len=config.max_tgt_len)
    counted = (examples.tgt != PAD).sum(0)
    for key, predicted in (("tf_accuracy_by_position", tf_predicted),
                           ("fr_accuracy_by_position", np.asarray(fr_predicted))):
        correct = ((predicted == examples.tgt) & (examples.tgt != PAD)).sum(0)
        expected = [c / n if n else None for c, n in zip(correct, counted, strict=True)]
        assert len(result[key]) == config.max_tgt_len
        for got, want in zip(result[key], expected, strict=True):
            assert got == pytest.approx(want) if want is not None else got is None
    weighted = sum(a * n for a, n in zip(result["fr_accuracy_by_position"], counted, strict=True)
                   if a is not None) / counted.sum()
    assert weighted == pytest.approx(result["fr_token_accuracy"])


def test_train_metrics_give_the_realised_gold_rate_by_position(ss_training):
    config, _, _, dataset, state, train_step = ss_training
    teacher_forcing = forcing.TeacherForcing.from_config(config.teacher_forcing)
    iterator = pipeline.train_iterator(dataset)
    history, gold, tokens = [], 0.0, 0.0
    for _ in range(3):
        batch = next(iterator)
        mask = np.asarray(teacher_forcing.mask(jax.random.fold_in(state.rng, state.step),
                                               state.step, batch["tgt_tokens"].shape))
        weights = batch["tgt_tokens"] != PAD
        gold, tokens = gold + (mask & weights).sum(0), tokens + weights.sum(0)
        state, step_metrics = train_step(state, batch)
        history.append(step_metrics)
    rates = training.summarize(history)["gold_rate_by_position"]
    assert len(rates) == config.max_tgt_len
    for got, g, n in zip(rates, gold, tokens, strict=True):
        assert got == pytest.approx(g / n) if n else got is None
    assert rates[0] == 1.0 and min(r for r in rates if r is not None) < 1.0
