import jax
import numpy as np
import pytest
from conftest import tiny_config

from flax_s2s import training
from flax_s2s.checkpoint import Checkpointer
from flax_s2s.data import pipeline
from flax_s2s.data.vocab import SymbolVocab
from flax_s2s.models import build_model

PAIRS = [(f"{a}+{b}", str(a + b)) for a, b in np.random.default_rng(0).integers(0, 999, (32, 2))]
VOCAB = SymbolVocab.build("0123456789+")


@pytest.fixture(scope="module")
def setup():
    config = tiny_config(**{"optimizer.learning_rate": 1e-2, "optimizer.warmup_steps": 20,
                            "num_train_steps": 400, "eval_batch_size": 32})
    config.model.hidden_dim = 64
    examples = pipeline.tokenize(PAIRS, VOCAB, VOCAB, config.max_src_len, config.max_tgt_len)
    model = build_model(config, len(VOCAB), len(VOCAB))
    tx = training.make_optimizer(config)
    dataset = pipeline.train_dataset(examples, config.batch_size, config.seed)
    train_step = jax.jit(training.make_train_step(model, tx, config))
    eval_step = training.make_evaluator(model, config)
    return config, examples, model, tx, dataset, train_step, eval_step


def test_tiny_model_overfits_32_examples(setup):
    config, examples, model, tx, dataset, train_step, eval_step = setup
    state = training.create_train_state(model, tx, config.seed, dataset[0])
    before = training.evaluate(eval_step, state.variables, examples, config.eval_batch_size)
    for step in range(config.num_train_steps):
        state, step_metrics = train_step(state, dataset[step])
    after = training.evaluate(eval_step, state.variables, examples, config.eval_batch_size)
    assert before["exact_match"] < 0.1
    assert after["exact_match"] == 1.0, after
    assert after["loss"] < 0.05 * before["loss"]


def test_save_then_restore_gives_same_params_and_next_loss(setup, tmp_path):
    config, examples, model, tx, dataset, train_step, eval_step = setup
    state = training.create_train_state(model, tx, config.seed, dataset[0])
    iterator = pipeline.train_iterator(dataset)
    for _ in range(3):
        state, _ = train_step(state, next(iterator))
    checkpointer = Checkpointer(str(tmp_path / "ckpt"))
    checkpointer.save(3, state, iterator, {"seed": config.seed})
    _, expected = train_step(state, next(iterator))

    fresh_iterator = pipeline.train_iterator(dataset)
    template = training.create_train_state(model, tx, config.seed + 1, dataset[0])
    restored = Checkpointer(str(tmp_path / "ckpt")).restore(template, fresh_iterator)
    assert int(restored.step) == 3
    jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)
    jax.tree.map(np.testing.assert_array_equal, restored.opt_state, state.opt_state)
    np.testing.assert_array_equal(restored.rng, state.rng)
    _, got = train_step(restored, next(fresh_iterator))
    assert float(got["loss"]) == float(expected["loss"])
    assert checkpointer.restore_config()["seed"] == config.seed
