"""Warm start (`config.init_from`): parameters from another workdir, a fresh optimizer, the
source's vocabularies, named errors on a mismatch, and an exact resume that never re-reads it."""

import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import ROLLED, ROOT, tiny_config

from flax_s2s import sharding, training
from flax_s2s.checkpoint import Checkpointer
from flax_s2s.logs import read_records
from flax_s2s.training.config import ConfigError, validate_config
from flax_s2s.warm_start import WarmStartError

SOURCE_STEPS, STEPS = 8, 10
TINY = {"model.emb_dim": 8, "model.hidden_dim": 16, "model.attention_dim": 8,
        "batch_size": 16, "eval_batch_size": 500, "log_every": 1, "eval_every": 1000,
        "checkpoint_every": 4, "max_checkpoints": 5, "optimizer.warmup_steps": 2, **ROLLED}


def _config(data_dir, **overrides):
    return tiny_config(**{**TINY, "data_dir": data_dir, **overrides})


@pytest.fixture(scope="module")
def source(tmp_path_factory, addition_data_dir):
    """A trained workdir to start from: checkpoints at steps 4 and 8."""
    workdir = str(tmp_path_factory.mktemp("source"))
    training.run(_config(addition_data_dir, num_train_steps=SOURCE_STEPS), workdir)
    return workdir


def _saved_variables(workdir, step):
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        return checkpointer.restore_variables(step)
    finally:
        checkpointer.close()


def _setup(config, workdir):
    setup = training.prepare_run(config, workdir, sharding.make_mesh(config.mesh_shape),
                            training.final_eval_splits(config))
    setup.checkpointer.close()
    return setup


@pytest.mark.parametrize("step", [-1, 4])
def test_warm_start_takes_the_parameters_and_vocabularies_with_a_fresh_optimizer(
    tmp_path, source, addition_data_dir, step
):
    config = _config(addition_data_dir, init_from=source, init_from_step=step, seed=5)
    setup = _setup(config, str(tmp_path))
    tx, state = setup.tx, setup.state
    expected = _saved_variables(source, SOURCE_STEPS if step == -1 else step)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), expected["params"])
    assert int(state.step) == 0
    fresh = tx.init(state.params)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.opt_state), jax.device_get(fresh))
    moments = [leaf for leaf in jax.tree.leaves(state.opt_state) if leaf.ndim > 0]
    assert moments and all(not np.asarray(leaf).any() for leaf in moments)
    for name in ("src_vocab.json", "tgt_vocab.json"):
        assert (tmp_path / name).read_bytes() == open(os.path.join(source, name), "rb").read()
    # the train key is this run's own (seed 5), not the source's
    source_state = ocp.StandardCheckpointer().restore(
        os.path.join(source, "checkpoints", str(SOURCE_STEPS), "state"))
    assert not np.array_equal(jax.random.key_data(state.rng), np.asarray(source_state["rng"]))


def test_another_model_shape_fails_naming_both_workdirs_and_the_parameter(
    tmp_path, source, addition_data_dir
):
    config = _config(addition_data_dir, init_from=source, **{"model.hidden_dim": 24})
    with pytest.raises(WarmStartError) as error:
        _setup(config, str(tmp_path))
    message = str(error.value)
    assert source in message and str(tmp_path) in message
    # the first differing parameter, with both shapes (hidden 16 there, 24 here: 2 x 16 vs 2 x 24)
    assert re.search(r"has params/\S+ \(32, 8\) float32, the model \(48, 8\) float32", message)


def test_another_vocabulary_fails_naming_both_workdirs(tmp_path, source, addition_data_dir):
    (tmp_path / "src_vocab.json").write_text('{"type": "symbol", "separator": "", "symbols": ["x"]}')
    config = _config(addition_data_dir, init_from=source)
    with pytest.raises(WarmStartError, match="src_vocab.json") as error:
        _setup(config, str(tmp_path))
    assert source in str(error.value) and str(tmp_path) in str(error.value)


def test_a_source_without_checkpoints_fails_naming_it(tmp_path, source, addition_data_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("src_vocab.json", "tgt_vocab.json"):
        shutil.copy(os.path.join(source, name), empty / name)
    with pytest.raises(WarmStartError, match="no checkpoint directory"):
        _setup(_config(addition_data_dir, init_from=str(empty)), str(tmp_path / "run"))


def test_model_fields_that_change_no_shape_may_differ_and_are_listed(
    tmp_path, source, addition_data_dir, capsys
):
    config = _config(addition_data_dir, init_from=source, **{"model.dropout_rate": 0.25})
    state = _setup(config, str(tmp_path)).state
    expected = _saved_variables(source, SOURCE_STEPS)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), expected["params"])
    assert "dropout_rate 0.0 -> 0.25" in capsys.readouterr().out


def test_init_from_step_below_minus_one_is_refused_by_name(addition_data_dir):
    with pytest.raises(ConfigError, match="config.init_from_step=-2"):
        validate_config(_config(addition_data_dir, init_from="anywhere", init_from_step=-2))


def _command(workdir, data_dir, source):
    overrides = {**TINY, "num_train_steps": STEPS, "init_from": source, "data_dir": data_dir}
    return [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={workdir}",
            *[f"--config.{key}={value}" for key, value in overrides.items()]]


@pytest.mark.slow
def test_killed_warm_started_run_resumes_to_the_uninterrupted_params_without_the_source(
    tmp_path, source, addition_data_dir, capsys
):
    """train.py killed with -9, then resumed (in this process, as `_command`'s config) with the
    source gone, against the same run uninterrupted (in this process too: fewer process starts)."""

    def run_here(workdir, init_from):
        config = _config(addition_data_dir, num_train_steps=STEPS, init_from=init_from)
        capsys.readouterr()
        training.run(config, str(workdir))
        return capsys.readouterr().out

    uninterrupted = tmp_path / "uninterrupted"
    assert "warm start from" in run_here(uninterrupted, source)

    copy = str(tmp_path / "source_copy")  # deleted before the resume: it must not be read again
    shutil.copytree(source, copy)
    killed = tmp_path / "killed"
    process = subprocess.Popen(_command(killed, addition_data_dir, copy), cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("step 6/"):  # after the checkpoint at step 4
            process.send_signal(signal.SIGKILL)
            break
    process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL
    shutil.rmtree(copy)
    resumed = run_here(killed, copy)
    assert "resumed" in resumed and "warm start" not in resumed

    def final(workdir):
        return _saved_variables(str(workdir), STEPS)["params"]

    jax.tree.map(np.testing.assert_array_equal, final(killed), final(uninterrupted))

    # and the warm start mattered: on the same first batch (same seed, same data order) its loss
    # is below the source's first loss, from the seed's initialisation, by what the source learned
    def train_losses(workdir):
        return [r["loss"] for r in read_records(os.path.join(workdir, "metrics.jsonl"))
                if r["split"] == "train"]

    source_losses, warm_losses = train_losses(source), train_losses(str(uninterrupted))
    assert source_losses[-1] < source_losses[0] - 0.1, "the source learned"
    assert warm_losses[0] < source_losses[0] - 0.1
