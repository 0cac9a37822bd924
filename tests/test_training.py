import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROLLED, tiny_config

from flax_s2s import reference_eval, training
from flax_s2s.checkpoint import Checkpointer
from flax_s2s.data import pipeline
from flax_s2s.data.vocab import SymbolVocab
from flax_s2s.models import build_model

PAIRS = [(f"{a}+{b}", str(a + b)) for a, b in np.random.default_rng(0).integers(0, 999, (32, 2))]
VOCAB = SymbolVocab.build("0123456789+")


@pytest.fixture(scope="module")
def setup():
    config = tiny_config(**{"optimizer.learning_rate": 1e-2, "optimizer.warmup_steps": 20,
                            "num_train_steps": 400, "eval_batch_size": 32, **ROLLED})
    config.model.hidden_dim = 64
    examples = pipeline.tokenize(PAIRS, VOCAB, VOCAB, config.max_src_len, config.max_tgt_len)
    model = build_model(config, len(VOCAB), len(VOCAB))
    tx = training.make_optimizer(config)
    dataset = pipeline.train_dataset(examples, config.batch_size, config.seed)
    train_step = jax.jit(training.make_train_step(model, tx, config))
    eval_step = training.make_evaluator(model, config)
    return config, examples, model, tx, dataset, train_step, eval_step


def _as_restored(state):
    """`state` strongly typed and committed to the device, as a checkpoint restores it and as the
    train step returns it: then the one compile of the train step serves every state here."""
    return jax.device_put(state.replace(step=jnp.asarray(state.step, jnp.int32)), jax.devices()[0])


@pytest.fixture(scope="module")
def overfit(setup):
    """(initial state, the state after num_train_steps on the 32 examples)."""
    config, examples, model, tx, dataset, train_step, eval_step = setup
    initial = state = _as_restored(training.create_train_state(model, tx, config.seed, dataset[0]))
    for step in range(config.num_train_steps):
        state, _ = train_step(state, dataset[step])
    return initial, state


def test_tiny_model_overfits_32_examples(setup, overfit):
    config, examples, model, tx, dataset, train_step, eval_step = setup
    before = training.evaluate(eval_step, overfit[0].variables, examples, config.eval_batch_size)
    after = training.evaluate(eval_step, overfit[1].variables, examples, config.eval_batch_size)
    assert before["exact_match"] < 0.1
    assert after["exact_match"] == 1.0, after
    assert after["loss"] < 0.05 * before["loss"]


def test_save_then_restore_gives_same_params_and_next_loss(setup, tmp_path):
    config, examples, model, tx, dataset, train_step, eval_step = setup
    state = _as_restored(training.create_train_state(model, tx, config.seed, dataset[0]))
    iterator = pipeline.train_iterator(dataset)
    for _ in range(3):
        state, _ = train_step(state, next(iterator))
    checkpointer = Checkpointer(str(tmp_path / "ckpt"))
    checkpointer.save(3, state, iterator, {"seed": config.seed})
    _, expected = train_step(state, next(iterator))

    fresh_iterator = pipeline.train_iterator(dataset)
    template = jax.tree.map(jnp.zeros_like, state)  # a fresh process's state, all zeros here
    restored = Checkpointer(str(tmp_path / "ckpt")).restore(template, fresh_iterator)
    assert int(restored.step) == 3
    jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)
    jax.tree.map(np.testing.assert_array_equal, restored.opt_state, state.opt_state)
    np.testing.assert_array_equal(restored.rng, state.rng)
    _, got = train_step(restored, next(fresh_iterator))
    assert float(got["loss"]) == float(expected["loss"])
    assert checkpointer.restore_config()["seed"] == config.seed


def test_one_decode_of_each_unique_source_serves_every_eval_metric(setup, overfit):
    """Two targets per source (a multi-reference split): the evaluator decodes the 32 unique
    sources once, in ceil(32 / batch) calls, and the text metrics equal an independent decode
    and scoring through `reference_eval`; the free-running exact match counts each example."""
    config, examples, model, tx, dataset, _, eval_step = setup
    state = overfit[1]  # right on the first reference of each source
    doubled = PAIRS + [(src, tgt[::-1]) for src, tgt in PAIRS]  # a second reference each
    split = pipeline.tokenize(doubled, VOCAB, VOCAB, config.max_src_len, config.max_tgt_len)
    calls = []

    def counted_decode(variables, src_tokens):
        calls.append(src_tokens.shape)
        return eval_step.decode(variables, src_tokens)

    evaluator = training.Evaluator(decode=counted_decode, score=eval_step.score)
    batch_size = 24
    result = training.evaluate(evaluator, state.variables, split, batch_size, ("wer", "per"), VOCAB)
    assert calls == [(batch_size, config.max_src_len)] * 2  # 32 sources, batches of 24
    grouped = pipeline.group_references(split)
    expected = reference_eval.evaluate_references(
        model, state.variables, grouped, VOCAB, ("wer", "per"), batch_size, config.max_tgt_len
    )
    assert result["wer"] == pytest.approx(expected["wer"])
    assert result["per"] == pytest.approx(expected["per"])
    # Exact match counts examples: each against its own target, by its source's one output.
    decode = reference_eval.best_decoder(model, state.variables, config.max_tgt_len)
    outputs = reference_eval.decode_sources(decode, grouped.src, batch_size)
    output_of = {source: VOCAB.decode(row) for source, row in zip(grouped.sources, outputs, strict=True)}
    right = [output_of[src] == tgt for src, tgt in doubled]
    assert 0.4 < np.mean(right) < 0.6  # the sums right, their reversals wrong (but palindromes)
    assert result["exact_match"] == pytest.approx(np.mean(right))
    assert result["wer"] == 0.0
