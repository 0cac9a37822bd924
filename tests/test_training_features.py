"""Gradient accumulation, the moving average of the parameters, and early stopping."""

import json
import os
import shutil
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import LETTERS, ROLLED, nan_loss_at, tiny_config

from flax_s2s import training
from flax_s2s.checkpoint import Checkpointer
from flax_s2s.data import pipeline
from flax_s2s.data.vocab import SymbolVocab
from flax_s2s.forcing import TeacherForcing
from flax_s2s.models import build_model, decoder_inputs

VOCAB = SymbolVocab.build(LETTERS)
MICROBATCHES = 4
# 32 reversals whose targets grow from 1 to 12 letters down the batch: the 4 microbatches of 8
# rows hold very different token counts (where per-microbatch normalisation would show).
_rng = np.random.default_rng(1)
UNEVEN_PAIRS = [(text, text[::-1]) for text in (
    "".join(_rng.choice(list(LETTERS), 1 + (12 * i) // 32)) for i in range(32))]


@pytest.fixture(scope="module")
def job():
    """A tiny LSTM, its initial parameters and the uneven batch, at the rolled lengths."""
    config = tiny_config(**ROLLED, grad_accum_steps=MICROBATCHES)
    examples = pipeline.tokenize(UNEVEN_PAIRS, VOCAB, VOCAB, config.max_src_len, config.max_tgt_len)
    batch = {"src_tokens": examples.src, "tgt_tokens": examples.tgt}
    model = build_model(config, len(VOCAB), len(VOCAB))
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(batch["src_tokens"]),
                        jnp.asarray(batch["tgt_tokens"]))["params"]
    return config, model, params, batch


def _reference_loss(model, forcing, params, batch, step_rng, step):
    """The whole batch's mean token cross-entropy, written out here: optax's per-token loss,
    masked to non-pad targets, summed and divided by their count."""
    variables = {"params": params}
    tgt = batch["tgt_tokens"]
    encoded = model.encode(variables, batch["src_tokens"])
    if forcing.always_gold:
        logits = model.forward(variables, encoded, decoder_inputs(tgt, model.special_tokens.bos))
    else:  # the mask one batch draws from the step's key
        logits, _ = forcing.train_logits(model, variables, encoded, tgt, step=step,
                                         step_rng=step_rng, dropout_rng=None)
    real = (tgt != model.special_tokens.pad).astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, tgt)
    return (losses * real).sum() / real.sum()


@pytest.mark.parametrize("teacher_forcing", [{}, {"p": 0.5}], ids=["gold", "scheduled_sampling"])
def test_microbatches_give_the_whole_batchs_loss_and_gradient(job, teacher_forcing):
    config, model, params, batch = job
    config = config.copy_and_resolve_references()
    config.teacher_forcing.update(teacher_forcing)
    forcing = TeacherForcing.from_config(config.teacher_forcing)
    step, step_rng = jnp.int32(3), jax.random.fold_in(jax.random.PRNGKey(5), 3)
    tokens = (training.split_microbatches(batch["tgt_tokens"], MICROBATCHES) != 0).sum((1, 2))
    assert tokens.max() > 3 * tokens.min(), tokens  # the uneven case

    expected_loss, expected_grads = jax.jit(jax.value_and_grad(
        lambda p: _reference_loss(model, forcing, p, batch, step_rng, step)))(params)
    batch_sums = training.make_batch_sums(model, forcing, config)
    loss, (counts, _), grads = jax.jit(lambda p: training.accumulated_gradients(
        batch_sums, forcing, p, {}, batch, step_rng, step, MICROBATCHES))(params)

    assert float(counts["tokens"]) == tokens.sum()
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    flat, expected_flat = (flax.traverse_util.flatten_dict(g, sep="/") for g in (grads, expected_grads))
    # atol on the gradient's own scale: the attention key bias's gradient is 0 but for float
    # noise (softmax ignores a shift of every score), so only a tolerance beside the others fits it
    scale = max(float(np.abs(g).max()) for g in expected_flat.values())
    for name, expected in expected_flat.items():
        np.testing.assert_allclose(flat[name], expected, rtol=1e-5, atol=1e-6 * scale, err_msg=name)
    if teacher_forcing:  # the forced path saw own tokens: the reference's mask was not all gold
        assert int(counts["gold_by_position"].sum()) < int(counts["tokens_by_position"].sum())


def test_microbatches_take_each_data_shards_rows_in_turn():
    rows = np.arange(16)  # two data shards of 8 rows, four microbatches of 4
    split = np.asarray(training.split_microbatches(rows, 4, data_shards=2))
    np.testing.assert_array_equal(split, [[0, 1, 8, 9], [2, 3, 10, 11], [4, 5, 12, 13],
                                          [6, 7, 14, 15]])


def _step_with_nan_loss_at(nan_step, config, model, batch):
    """(optimizer, a train state with an average, the batch's loss sums, the jitted train step
    whose loss is NaN at train step `nan_step`)."""
    tx = training.make_optimizer(config)
    state = training.create_train_state(model, tx, config.seed, batch, ema=True)
    batch_sums = training.make_batch_sums(model, TeacherForcing.from_config(config.teacher_forcing),
                                          config)
    train_step = jax.jit(training.make_train_step(model, tx, config,
                                                  batch_sums=nan_loss_at(nan_step, batch_sums)))
    return tx, state, batch_sums, train_step


def test_the_average_of_the_parameters_follows_them_and_skips_a_nonfinite_step(job):
    """The state's average after each step equals decay * average + (1 - decay) * params,
    computed here in NumPy from the parameters recorded after each step, starting at the
    initial ones; the step whose loss is NaN moves neither."""
    config, model, _, batch = job
    config = tiny_config(**ROLLED, ema_decay=0.6,
                         **{"optimizer.warmup_steps": 1, "optimizer.learning_rate": 3e-2})
    tx, state, batch_sums, train_step = _step_with_nan_loss_at(2, config, model, batch)
    recorded, skipped = [jax.device_get(state.params)], []
    for _ in range(4):
        state, step_metrics = train_step(state, batch)
        recorded.append(jax.device_get(state.params))
        skipped.append(bool(step_metrics["nonfinite_steps"]))
    assert skipped == [False, False, True, False]

    average = recorded[0]
    for params, skip in zip(recorded[1:], skipped, strict=True):
        if not skip:
            average = jax.tree.map(lambda a, p: 0.6 * a + 0.4 * p, average, params)
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7),
                 jax.device_get(state.ema_params), average)
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), state.ema_params, state.params)
    assert max(jax.tree.leaves(moved)) > 1e-3  # the average lags the parameters
    assert state.eval_variables()["params"] is state.ema_params
    assert state.eval_variables(use_ema=False)["params"] is state.params


def test_a_step_updates_as_optax_does_keeps_all_state_when_skipped_and_copies_no_moment(job):
    """The guard against non-finite steps: a finite step's parameters and optimizer state equal
    optax's update applied by hand to the gradient; the NaN step leaves every leaf of the state
    (parameters, moments, count, average) bit for bit as it was; and the compiled step, its
    state donated, copies none of the optimizer's moments (a select of new against old state
    made XLA copy each of them before writing the new one in place)."""
    _, model, _, batch = job
    config = tiny_config(**ROLLED, ema_decay=0.5)
    tx, state, batch_sums, _ = _step_with_nan_loss_at(1, config, model, batch)
    # One compile serves all three checks: the step as training runs it, its state donated.
    train_step = jax.jit(training.make_train_step(model, tx, config,
                                                  batch_sums=nan_loss_at(1, batch_sums)),
                         donate_argnums=0).lower(state, batch).compile()
    copied = [line for line in train_step.as_text().splitlines() if " copy(%state_opt_state" in line]
    assert not copied, copied[:3]

    def mean_loss(params):
        loss_sum, (counts, _) = batch_sums(params, {}, batch, jax.random.fold_in(
            state.rng, 0), jnp.int32(0))
        return loss_sum / counts["tokens"]

    grads = jax.jit(jax.grad(mean_loss))(state.params)
    updates, want_opt_state = tx.update(grads, state.opt_state, state.params)
    want_params = optax.apply_updates(state.params, updates)
    stepped, step_metrics = train_step(state, batch)
    assert int(step_metrics["nonfinite_steps"]) == 0
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7),
                 (stepped.params, stepped.opt_state), (want_params, want_opt_state))

    before = jax.tree.map(np.array, stepped)  # host copies: the step below donates `stepped`
    skipped, step_metrics = train_step(stepped, batch)
    assert int(step_metrics["nonfinite_steps"]) == 1 and int(skipped.step) == 2
    jax.tree.map(np.testing.assert_array_equal,
                 (skipped.params, skipped.opt_state, skipped.ema_params),
                 (before.params, before.opt_state, before.ema_params))


@flax.struct.dataclass
class _StateWithoutAverage:
    """A train state as checkpoints saved it before the average existed."""

    step: Any
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: Any


def test_a_checkpoint_from_before_the_average_restores_only_into_a_state_without_one(tmp_path):
    params = {"w": np.arange(3.0, dtype=np.float32)}
    old = _StateWithoutAverage(np.asarray(7, np.int32), params, {}, {"mu": params}, np.zeros(2, np.uint32))
    Checkpointer(str(tmp_path)).save(7, old, None, {})
    template = training.TrainState(step=np.asarray(0, np.int32), params={"w": np.zeros(3, np.float32)},
                                   batch_stats={}, opt_state={"mu": {"w": np.zeros(3, np.float32)}},
                                   rng=np.zeros(2, np.uint32))
    restored = Checkpointer(str(tmp_path)).restore(template)
    assert int(restored.step) == 7 and restored.ema_params == {}
    np.testing.assert_array_equal(restored.params["w"], params["w"])
    with pytest.raises(ValueError, match=r"holds no \['ema_params'\]"):
        Checkpointer(str(tmp_path)).restore(template.replace(ema_params=template.params))
    assert Checkpointer(str(tmp_path)).all_steps() == [7]  # refused, not set aside as unreadable


def _records(workdir) -> list[dict]:
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def _expected_stop(values: list[float], patience: int) -> tuple[int, int]:
    """(index of the eval at which `patience` evals in a row failed to raise the maximum, index
    of that maximum), counted here independently of flax_s2s.early_stopping."""
    best = 0
    for index in range(1, len(values)):
        if values[index] > values[best]:
            best = index
        elif index - best == patience:
            return index, best
    raise AssertionError(f"the metric never stalled for {patience} evals: {values}")


def test_early_stopping_stops_at_the_stalled_eval_and_reports_the_best_checkpoint(
    tmp_path, addition_data_dir, capsys
):
    """best_mode "max" on the validation loss: as training lowers the loss, the metric stops
    "improving". The run ends at the eval where patience runs out, keeps the best checkpoint, and
    its final validation metrics are those recorded at that checkpoint's eval. A copy of the run
    resumed from a checkpoint before the stop (its eval history restored) stops at the same eval."""
    patience, every = 2, 4
    # two microbatches a step: the accumulating train step, end to end
    config = tiny_config(**ROLLED, data_dir=addition_data_dir, num_train_steps=60, eval_every=every,
                         grad_accum_steps=2,
                         log_every=every, checkpoint_every=every, max_checkpoints=1, keep_best=1,
                         eval_batch_size=500, best_metric="validation/loss", best_mode="max",
                         **{"early_stopping.patience": patience, "optimizer.warmup_steps": 1})
    workdir = tmp_path / "run"
    result = training.run(config, str(workdir))

    records = [r for r in _records(workdir) if r["split"] == "validation"]
    periodic = [r for r in records if "checkpoint_step" not in r]
    stop_index, best_index = _expected_stop([r["loss"] for r in periodic], patience)
    stop_step, best_step = periodic[stop_index]["step"], periodic[best_index]["step"]
    assert best_step < stop_step < config.num_train_steps
    assert len(periodic) == stop_index + 1
    assert (result["stopped_by"], result["step"]) == ("early_stopping", stop_step)
    assert f"early stopping at step {stop_step}" in capsys.readouterr().out
    assert sorted(os.listdir(workdir / "checkpoints")) == sorted({str(best_step), str(stop_step)})
    final = result["final"]["validation"]
    assert final["checkpoint_step"] == best_step
    for key in ("loss", "token_accuracy", "fr_token_accuracy", "exact_match"):
        assert final[key] == periodic[best_index][key], key

    # The copy keeps only the best checkpoint, from before the stop.
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    shutil.rmtree(copy / "checkpoints" / str(stop_step))
    resumed = training.run(config, str(copy))
    assert (resumed["stopped_by"], resumed["step"]) == ("early_stopping", stop_step)
    assert resumed["final"]["validation"] == final


def test_decoding_and_evaluation_read_the_average_unless_asked_for_the_raw_weights(tmp_path):
    state = {"step": np.asarray(1), "params": {"w": np.zeros(2, np.float32)},
             "ema_params": {"w": np.ones(2, np.float32)}}
    Checkpointer(str(tmp_path)).save(1, state, None, {})
    checkpointer = Checkpointer(str(tmp_path))
    np.testing.assert_array_equal(checkpointer.restore_variables()["params"]["w"], [1.0, 1.0])
    np.testing.assert_array_equal(
        checkpointer.restore_variables(raw_weights=True)["params"]["w"], [0.0, 0.0])
    variables, step = checkpointer.restore_newest_variables(raw_weights=True)
    assert step == 1 and float(variables["params"]["w"].sum()) == 0.0
