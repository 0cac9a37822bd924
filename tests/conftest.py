"""Shared fixtures: tiny models and data, compiled once per module or session."""

from __future__ import annotations

import functools
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `configs` is imported from the repository root, as train.py does
    sys.path.insert(0, ROOT)


def _share_compiles() -> None:
    """One persistent compilation cache for this run's processes: both xdist workers (they share
    the run's id) and every train.py, CLI or checker subprocess a test starts, which inherit it
    through JAX's own environment variables (train.py's default cache directory gives way to
    `JAX_COMPILATION_CACHE_DIR`). The same tiny models compile in many files and processes, and a
    program compiled once is read back after. Each run starts with an empty directory, so no test
    reads what an older run (or older code) compiled."""
    import tempfile

    import jax

    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
    directory = os.path.join(tempfile.gettempdir(), f"flax_s2s-tests-jax-cache-{run}")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


_share_compiles()


FAST_COMPILE = "--xla_backend_optimization_level=0"


def _compile_faster() -> None:
    """XLA:CPU's backend at optimisation level 0 for this run and the processes it starts (they
    inherit XLA_FLAGS): the tests' tiny programs spend far more time compiling than running, and
    level 0 halves the compile (a tiny LSTM's train step 14.2 -> 7.8 CPU seconds) while running
    them about 2x slower. What the tests compare (two paths, a resume, a reference) runs under
    the same flags on both sides. An XLA_FLAGS that already names the level wins."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {FAST_COMPILE}".strip()


_compile_faster()


def load_bench(name: str):
    """The module bench/NAME.py (bench/ is scripts, not a package), registered under NAME in
    sys.modules, where dataclasses look their module up."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tree_digest(root) -> dict[str, str]:
    """{path relative to `root`: sha256 of its bytes, or "dir"} of everything under `root`: equal
    before and after a command when it changed nothing there."""
    import hashlib

    digest = {}
    for directory, subdirs, files in os.walk(root):
        for name in subdirs:
            digest[os.path.relpath(os.path.join(directory, name), root)] = "dir"
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                digest[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digest


# The addition task's splits at test size: every train.py or CLI a test starts reads all of a
# task's splits, and the full 204k examples take about 8 s a process to read here.
ADDITION_TEST_SPLITS = {"test": 500, "validation": 500, "train": 10_000}


@pytest.fixture(scope="session")
def addition_data_dir(tmp_path_factory) -> str:
    """The addition task prepared once for the whole test session, by the task's own builder
    (same problems, same disjoint cut) with fewer examples per split: train.py, the CLIs and
    `training.run` read it as the task "addition" like the full one."""
    from flax_s2s.data import tasks

    class TestSizedAddition(tasks.Addition, skip_registration=True):
        name = "addition"  # the directory, and so the dataset, that tasks.prepare reads
        SPLIT_SIZES = ADDITION_TEST_SPLITS

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    TestSizedAddition(data_dir=data_dir, file_format="array_record").download_and_prepare()
    builder = tasks.prepare("addition", data_dir)
    assert {name: split.num_examples for name, split in builder.info.splits.items()} == (
        ADDITION_TEST_SPLITS
    )
    return data_dir


# Lengths just past `unroll.FULL_UNROLL_MAX`: the RNN recurrences and decoder scans run rolled,
# which compiles in a fraction of the time of a full unroll (a tiny LSTM's train step at 8/6
# tokens: init 2.8 s + step 5.5 s; at 13/13: 0.5 s + 3.6 s). For tests of what the unroll does
# not change (sharding, kill and resume, CLIs, reports); the unroll has tests of its own.
ROLLED = {"max_src_len": 13, "max_tgt_len": 13}
ROLLED_FLAGS = [f"--config.{key}={value}" for key, value in ROLLED.items()]


def tiny_config(**overrides):
    """The default config shrunk to a model that compiles and trains in seconds."""
    from configs import default

    config = default.get_config()
    config.model.emb_dim = 16
    config.model.hidden_dim = 32
    config.model.attention_dim = 16
    config.batch_size = 32
    config.eval_batch_size = 64
    config.num_train_steps = 20
    config.log_every = 10
    config.eval_every = 10
    config.checkpoint_every = 10
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def nan_loss_at(step: int, batch_sums):
    """Fault injection for the non-finite guard: `batch_sums` (`training.make_batch_sums`'s
    function, or `make_train_step`'s `batch_sums=`) with a NaN loss at train step `step`."""
    import jax.numpy as jnp

    def poisoned(params, batch_stats, batch, rng, train_step, mask=None):
        loss_sum, aux = batch_sums(params, batch_stats, batch, rng, train_step, mask)
        return jnp.where(train_step == step, jnp.nan, loss_sum), aux

    return poisoned


def poison_training_at(monkeypatch, step: int) -> None:
    """Every train step built while `monkeypatch` holds (`training.run` included) has a NaN loss
    at train step `step`."""
    from flax_s2s.training import step as train_step_module

    make_batch_sums = train_step_module.make_batch_sums
    monkeypatch.setattr(train_step_module, "make_batch_sums",
                        lambda *args: nan_loss_at(step, make_batch_sums(*args)))


# Reversals of 32 short strings: a fixed batch that tiny models fit in a few steps.
_letters_rng = np.random.default_rng(0)
LETTERS = "abcdefgh"
REVERSE_PAIRS = [
    (text, text[::-1])
    for text in ("".join(_letters_rng.choice(list(LETTERS), _letters_rng.integers(1, 6)))
                 for _ in range(32))
]
TINY_TRANSFORMER = {"model.type": "transformer", "model.d_model": 16, "model.num_heads": 2,
                    "model.mlp_dim": 32, "model.num_encoder_layers": 1,
                    "model.num_decoder_layers": 1}


@functools.cache
def train_tiny(overrides: tuple = (), steps: int = 12):
    """A tiny model trained `steps` steps on one fixed batch of REVERSE_PAIRS, cached for the
    session so that test files share the compiled step. Returns (config, model, tx, batch,
    initial state, final state, losses)."""
    import jax

    from flax_s2s import training
    from flax_s2s.data import pipeline
    from flax_s2s.data.vocab import SymbolVocab
    from flax_s2s.models import build_model

    config = tiny_config(**{"max_src_len": 6, "max_tgt_len": 7, "optimizer.learning_rate": 3e-3,
                            "optimizer.warmup_steps": 1, **dict(overrides)})
    vocab = SymbolVocab.build(LETTERS)
    examples = pipeline.tokenize(REVERSE_PAIRS, vocab, vocab, config.max_src_len,
                                 config.max_tgt_len)
    model = build_model(config, len(vocab), len(vocab))
    tx = training.make_optimizer(config)
    batch = pipeline.train_dataset(examples, config.batch_size, config.seed)[0]
    initial = training.create_train_state(model, tx, config.seed, batch)
    train_step = jax.jit(training.make_train_step(model, tx, config))
    state, losses = initial, []
    for _ in range(steps):
        state, step_metrics = train_step(state, batch)
        losses.append(float(step_metrics["loss"]))
    return config, model, tx, batch, initial, state, losses



def untrained_symbol_model(seed: int, batch: int, src_len: int, max_len: int):
    """A tiny LSTM over symbol vocabularies a-e -> x-z, its weights randomly drawn from `seed`
    and widened (peaked, varied distributions), as a `TrainedModel` for decoding tests."""
    import jax

    from configs import default
    from flax_s2s.data.vocab import SymbolVocab
    from flax_s2s.models import build_model
    from flax_s2s.workdirs import TrainedModel

    config = default.get_config()
    config.model.update(emb_dim=8, hidden_dim=16, attention_dim=8)
    config.max_src_len, config.max_tgt_len = src_len, max_len
    src_vocab, tgt_vocab = SymbolVocab(list("abcde")), SymbolVocab(list("xyz"))
    model = build_model(config, len(src_vocab), len(tgt_vocab))
    shape = np.zeros((batch, src_len), np.int32)
    variables = jax.jit(model.init)(jax.random.PRNGKey(seed), shape, shape)
    variables = jax.tree.map(lambda w: 3.0 * w, variables)
    return TrainedModel(config, model, variables, src_vocab, tgt_vocab, 0, (0,))
