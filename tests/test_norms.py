"""Norms against NumPy references; BatchNorm's running statistics in training, eval and decoding;
their checkpoints; and the config check that keeps BatchNorm off the step-by-step training path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_TRANSFORMER, tiny_config, train_tiny

from flax_s2s import training
from flax_s2s.checkpoint import Checkpointer
from flax_s2s.models import decoder_inputs
from flax_s2s.models.norms import MaskedBatchNorm, make_norm
from flax_s2s.training.config import ConfigError, validate_config

_rng = np.random.default_rng(0)
X = (_rng.normal(size=(3, 5, 4)) * [1.0, 3.0, 0.5, 2.0] + [0.0, 1.0, -2.0, 5.0]).astype(np.float32)
LENGTHS = np.array([5, 2, 3])
MASK = np.arange(5)[None, :] < LENGTHS[:, None]  # [3, 5]: True at real positions


def _numpy_batch_norm(x, mask, epsilon=1e-5):
    """Mean and variance per feature over the real positions only, by a plain loop."""
    rows = [x[b, t] for b in range(x.shape[0]) for t in range(x.shape[1]) if mask[b, t]]
    rows = np.array(rows, np.float64)
    mean, var = rows.mean(0), rows.var(0)
    return (x - mean) / np.sqrt(var + epsilon), mean, var


def test_masked_batch_norm_uses_statistics_of_real_positions_only():
    norm = MaskedBatchNorm(momentum=0.9)
    variables = norm.init(jax.random.PRNGKey(0), X, MASK, False)
    y, updated = norm.apply(variables, X, MASK, True, mutable=["batch_stats"])
    expected, mean, var = _numpy_batch_norm(X, MASK)
    np.testing.assert_allclose(np.asarray(y)[MASK], expected[MASK], rtol=1e-4, atol=1e-5)
    stats = updated["batch_stats"]
    np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * var, rtol=1e-5, atol=1e-6)
    # Garbage at pad positions changes nothing at real positions.
    noisy = np.where(MASK[..., None], X, 1e3).astype(np.float32)
    y_noisy, _ = norm.apply(variables, noisy, MASK, True, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(y_noisy)[MASK], np.asarray(y)[MASK], rtol=1e-5, atol=1e-5)


def test_masked_batch_norm_eval_uses_running_statistics_and_writes_nothing():
    norm = MaskedBatchNorm()
    variables = norm.init(jax.random.PRNGKey(0), X, MASK, False)
    running = {"mean": jnp.array([1.0, -1.0, 0.5, 2.0]), "var": jnp.array([4.0, 1.0, 0.25, 9.0])}
    variables = {**variables, "batch_stats": running}
    y, updated = norm.apply(variables, X, MASK, False, mutable=["batch_stats"])
    expected = (X - np.asarray(running["mean"])) / np.sqrt(np.asarray(running["var"]) + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, updated["batch_stats"], running)


def test_masked_batch_norm_with_no_real_position_keeps_running_statistics():
    norm = MaskedBatchNorm()
    variables = norm.init(jax.random.PRNGKey(0), X, MASK, False)
    nothing = np.zeros_like(MASK)
    y, updated = norm.apply(variables, X, nothing, True, mutable=["batch_stats"])
    assert np.all(np.isfinite(y))
    jax.tree.map(np.testing.assert_array_equal, updated["batch_stats"], variables["batch_stats"])


def test_per_position_running_statistics_move_only_their_position():
    """The recurrent decoder's BatchNorm: one set of running statistics per step."""
    norm = MaskedBatchNorm(momentum=0.9, num_positions=3)
    x, live = X[:, 0], MASK[:, 3]  # one decoding step: [batch, features], rows still running
    variables = norm.init(jax.random.PRNGKey(0), x, live, False, 0)
    _, updated = norm.apply(variables, x, live, True, 1, mutable=["batch_stats"])
    _, mean, var = _numpy_batch_norm(x[:, None], live[:, None])
    stats = updated["batch_stats"]
    np.testing.assert_allclose(stats["mean"][1], 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"][1], 0.9 + 0.1 * var, rtol=1e-5, atol=1e-6)
    for row in (0, 2):  # the other steps are untouched
        np.testing.assert_array_equal(stats["mean"][row], variables["batch_stats"]["mean"][row])
    # Eval reads its step's row; steps past the table share the last row.
    table = {"mean": jnp.arange(12.0).reshape(3, 4), "var": jnp.full((3, 4), 4.0)}
    for position, row in ((1, 1), (7, 2)):
        y = norm.apply({**variables, "batch_stats": table}, x, live, False, position)
        expected = (x - np.asarray(table["mean"][row])) / np.sqrt(4.0 + 1e-5)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["layer", "rms", "none"])
def test_per_position_norms_equal_numpy(kind):
    norm = make_norm(kind)
    variables = norm.init(jax.random.PRNGKey(0), X)
    y = np.asarray(norm.apply(variables, X, MASK, True))
    x = X.astype(np.float64)
    if kind == "layer":
        expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    elif kind == "rms":
        expected = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)
    else:
        expected = x
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_unknown_norm_kind_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="model.norm"):
        make_norm("group")


# --- BatchNorm models: training moves the running statistics, eval and decoding do not -------

@pytest.fixture(scope="module", params=["transformer", "lstm"])
def batch_norm_run(request):
    """A BatchNorm model trained 12 steps (the Transformer run is shared with
    tests/test_transformer.py). Returns (config, model, tx, batch, initial, final state)."""
    if request.param == "transformer":
        overrides = (*TINY_TRANSFORMER.items(), ("model.norm", "batch"),
                     ("model.norm_position", "post"))
    else:
        overrides = (("model.norm", "batch"), ("model.norm_position", "pre"),
                     ("model.bidirectional", False))
    return train_tiny(overrides)[:-1]


def test_train_steps_move_every_running_statistic(batch_norm_run):
    *_, initial, state = batch_norm_run
    assert jax.tree.leaves(initial.batch_stats), "the model should have BatchNorm statistics"
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                         initial.batch_stats, state.batch_stats)
    assert min(jax.tree.leaves(moved)) > 0, moved


def test_eval_and_decoding_read_running_statistics_and_write_none(batch_norm_run):
    _, model, _, batch, _, state = batch_norm_run
    src, tgt = batch["src_tokens"], batch["tgt_tokens"]
    module = model.module
    cls = type(module)
    variables = state.variables

    tgt_inputs = decoder_inputs(tgt)
    reverse = np.arange(len(src))[::-1]  # the same examples in another batch order

    @jax.jit
    def eval_paths(variables):
        """encode, forward and one decoding step in eval mode with batch_stats left writable;
        forward on the reordered batch."""
        encoded, after_encode = module.apply(variables, src, False, method=cls.encode,
                                             mutable=["batch_stats"])
        if hasattr(cls, "forward"):
            logits, after_forward = module.apply(variables, encoded, tgt_inputs, False,
                                                 method=cls.forward, mutable=["batch_stats"])
        else:  # the recurrent forward is `step` scanned, checked next
            logits = model.forward(variables, encoded, tgt_inputs)
            after_forward = {"batch_stats": variables["batch_stats"]}
        cache = model.init_cache(variables, encoded, tgt.shape[1])
        _, after_step = module.apply(variables, encoded, cache, tgt_inputs[:, 0], 0, False,
                                     method=cls.step, mutable=["batch_stats"])
        reordered_logits = model.forward(
            variables, model.encode(variables, src[reverse]), tgt_inputs[reverse])
        # The same with batch statistics: a half batch normalises differently.
        half = len(src) // 2
        train_memory = model.encode(variables, src, train=True, update_stats=True)[0]["memory"]
        half_memory = model.encode(variables, src[:half], train=True, update_stats=True)[0]
        batch_dependence = jnp.abs(half_memory["memory"] - train_memory[:half]).max()
        outputs = logits, reordered_logits, batch_dependence
        return outputs, [after_encode, after_forward, after_step]

    outputs, written = eval_paths(variables)
    logits, reordered_logits, batch_dependence = outputs
    for collection in written:
        jax.tree.map(np.testing.assert_array_equal, collection["batch_stats"],
                     variables["batch_stats"])
    # Running statistics make each example's output independent of the rest of the batch.
    np.testing.assert_allclose(np.asarray(reordered_logits)[reverse], logits, rtol=1e-4, atol=1e-4)
    assert batch_dependence > 1e-3, "with batch statistics the check above would fail"


def test_train_mode_without_update_stats_is_refused(batch_norm_run):
    _, model, _, batch, _, state = batch_norm_run
    with pytest.raises(ValueError, match="update_stats"):
        model.encode(state.variables, batch["src_tokens"], train=True)


def test_batch_stats_save_and_restore_with_orbax(batch_norm_run, tmp_path):
    config, model, tx, batch, _, state = batch_norm_run
    checkpointer = Checkpointer(str(tmp_path / "ckpt"))
    checkpointer.save(3, state, None, {"seed": config.seed})
    template = training.create_train_state(model, tx, config.seed + 1, batch)
    restored = Checkpointer(str(tmp_path / "ckpt")).restore(template)
    jax.tree.map(np.testing.assert_array_equal, restored.batch_stats, state.batch_stats)
    jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)


@pytest.mark.parametrize("key, value", [("norm", "group"), ("norm_position", "middle"),
                                        ("dtype", "float16"), ("positions", "rotary")])
def test_bad_model_choices_are_refused_naming_the_key(key, value):
    config = tiny_config(**{f"model.{key}": value})
    with pytest.raises(ConfigError, match=f"model.{key}"):
        validate_config(config)


def test_batch_norm_with_scheduled_sampling_is_refused_before_anything_runs():
    config = tiny_config(**{"model.norm": "batch"})
    validate_config(config)  # the default: constant p = 1, full teacher forcing
    config.teacher_forcing.update(schedule="linear", k=1.0, slope=1e-3)
    with pytest.raises(ConfigError, match="model.norm='batch'"):
        validate_config(config)
    config.teacher_forcing.update(schedule="constant", p=0.5)
    with pytest.raises(ConfigError, match="model.norm='batch'"):
        validate_config(config)
    config.teacher_forcing.update(p=1.0)
    validate_config(config)
