"""Fault injection: kill -9 and resume, SIGTERM, broken checkpoints, NaN losses, bad configs."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import ROLLED_FLAGS, ROOT, tiny_config

from flax_s2s import training
from flax_s2s.checkpoint import Checkpointer
from flax_s2s.config_validation import ConfigError, validate_config

STEPS = 30
TINY = [
    "--config.model.emb_dim=8", "--config.model.hidden_dim=16", "--config.model.attention_dim=8",
    "--config.batch_size=16", "--config.eval_batch_size=500", "--config.log_every=1",
    "--config.eval_every=1000", "--config.checkpoint_every=4", f"--config.num_train_steps={STEPS}",
    "--config.max_checkpoints=2", *ROLLED_FLAGS,
    # an average of the parameters and two microbatches a step: both resume exactly too
    "--config.ema_decay=0.9", "--config.grad_accum_steps=2",
]


def _command(workdir, data_dir):
    return [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={workdir}",
            f"--config.data_dir={data_dir}", *TINY]


def _run_until_step(workdir, data_dir, kill_step, sig):
    """Starts train.py and sends `sig` once it has printed step `kill_step`; returns the process."""
    process = subprocess.Popen(_command(workdir, data_dir), cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith(f"step {kill_step}/"):
            process.send_signal(sig)
            break
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def _final_params(workdir):
    """The final parameters and their moving average."""
    path = os.path.join(workdir, "checkpoints", str(STEPS), "state")
    state = ocp.StandardCheckpointer().restore(os.path.abspath(path))
    assert state["ema_params"]
    return {"params": state["params"], "ema_params": state["ema_params"]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, addition_data_dir):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(_command(workdir, addition_data_dir), cwd=ROOT, check=True, capture_output=True)
    return _final_params(workdir)


@pytest.mark.slow
def test_killed_three_times_and_resumed_gives_bit_identical_params(
    tmp_path, addition_data_dir, uninterrupted
):
    # Three kill -9s at steps drawn from three seeds, each followed by a resume.
    kill_steps = sorted(int(np.random.default_rng(seed).integers(2, STEPS - 1)) for seed in range(3))
    for kill_step in kill_steps:
        code, _, _ = _run_until_step(tmp_path, addition_data_dir, kill_step, signal.SIGKILL)
        assert code == -signal.SIGKILL
    result = subprocess.run(_command(tmp_path, addition_data_dir), cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert "resumed" in result.stdout
    jax.tree.map(np.testing.assert_array_equal, _final_params(tmp_path), uninterrupted)


@pytest.mark.slow
def test_a_second_trainer_on_a_workdir_in_use_fails_at_once_and_a_killed_ones_lock_is_taken_over(
    tmp_path, addition_data_dir
):
    # far more steps than it will live for: it still holds the workdir when the second starts
    first = subprocess.Popen([*_command(tmp_path, addition_data_dir), "--config.num_train_steps=1000000"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in first.stdout:
        if line.startswith("step 1/"):
            break
    second = subprocess.run(_command(tmp_path, addition_data_dir), cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    assert second.returncode != 0
    assert f"is in use by a trainer: pid {first.pid} on this host" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr

    # kill -9 left the lock behind; the next trainer takes it over and trains to the end
    third = subprocess.run([*_command(tmp_path, addition_data_dir), "--config.num_train_steps=5"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-2000:]
    assert f"taking over the stale lock of pid {first.pid}" in third.stderr
    assert not (tmp_path / "trainer.lock").exists()


@pytest.mark.slow
def test_sigterm_saves_exits_zero_and_resume_continues(tmp_path, addition_data_dir, uninterrupted):
    code, out, err = _run_until_step(tmp_path, addition_data_dir, 6, signal.SIGTERM)
    assert code == 0, err[-2000:]
    stopped_at = int(out.split("stopped by SIGTERM at step ")[1].split(";")[0])
    assert stopped_at >= 6
    assert str(stopped_at) in os.listdir(tmp_path / "checkpoints")
    result = subprocess.run(_command(tmp_path, addition_data_dir), cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert f"at step {stopped_at}" in result.stdout
    jax.tree.map(np.testing.assert_array_equal, _final_params(tmp_path), uninterrupted)


def _small_state():
    return {"w": np.arange(6.0).reshape(2, 3), "step": np.asarray(0)}


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_broken_latest_checkpoint_falls_back_to_previous_with_warning(tmp_path, damage):
    checkpointer = Checkpointer(str(tmp_path), max_to_keep=3)
    for step in (1, 2):
        state = {"w": np.full((2, 3), float(step)), "step": np.asarray(step)}
        checkpointer.save(step, state, None, {"step": step})
    # the array data files of the newest checkpoint (tensorstore OCDBT data under .../d/)
    files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "2" / "state") for f in fs
             if os.path.basename(d) == "d"]
    assert files
    for path in files:
        if damage == "truncate":
            with open(path, "r+b") as f:
                f.truncate(max(os.path.getsize(path) // 3, 1))
        else:
            os.remove(path)
    fresh = Checkpointer(str(tmp_path))
    with pytest.warns(UserWarning, match=r"checkpoints?.*2.*unreadable"):
        restored = fresh.restore(_small_state())
    assert fresh.restored_step == 1
    np.testing.assert_array_equal(restored["w"], np.full((2, 3), 1.0))
    assert fresh.all_steps() == [1]  # the broken one is set aside; step 2 can be saved again
    fresh.save(2, restored, None, {})


def _run_tiny(workdir, data_dir, **overrides):
    config = tiny_config(**{"data_dir": data_dir, "num_train_steps": 10, "log_every": 5,
                            "checkpoint_every": 5, "eval_every": 1000, **overrides})
    return training.run(config, str(workdir))


def _records(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def test_nonfinite_skip_policy_counts_and_keeps_params_finite(tmp_path, addition_data_dir):
    _run_tiny(tmp_path, addition_data_dir, debug_nonfinite_step=7, nonfinite_policy="skip")
    train = [r for r in _records(tmp_path) if r["split"] == "train"]
    assert [r["nonfinite_steps"] for r in train] == [0, 1]
    params = ocp.StandardCheckpointer().restore(str(tmp_path / "checkpoints" / "10" / "state"))
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params["params"]))


def test_nonfinite_stop_policy_raises_and_keeps_last_good_checkpoint(tmp_path, addition_data_dir):
    with pytest.raises(training.NonFiniteError, match="up to step 10"):
        _run_tiny(tmp_path, addition_data_dir, debug_nonfinite_step=7, nonfinite_policy="stop")
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["5"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"max_src_len": 1}, "config.max_src_len=1: must be >= 2"),
        ({"max_tgt_len": 0}, "config.max_tgt_len=0: must be >= 2"),
        ({"batch_size": 0}, "config.batch_size=0: must be > 0"),
        ({"task": "sorting"}, "config.task='sorting': must be one of"),
        ({"too_long": "truncate"}, "config.too_long='truncate': must be one of ['drop', 'error']"),
        ({"nonfinite_policy": "ignore"}, "config.nonfinite_policy='ignore': must be one of"),
        ({"model.type": "mamba"}, "config.model.type='mamba': must be one of"),
        ({"model.cell": "rnn"}, "config.model.cell='rnn': must be one of ['lstm', 'gru']"),
        ({"label_smoothing": 1.0}, "config.label_smoothing=1.0: must be in [0, 1)"),
        ({"optimizer.learning_rate": -1.0}, "config.optimizer.learning_rate=-1.0: must be > 0"),
        ({"keep_best": 2, "best_metric": "test/exact_match"}, "config.best_metric='test/exact_match'"),
    ],
)
def test_bad_configs_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate_config(tiny_config(**overrides))
    assert message in str(error.value)




def test_restored_step_is_none_until_a_restore_and_then_the_step_read(tmp_path):
    checkpointer = Checkpointer(str(tmp_path))
    assert checkpointer.restored_step is None
    for step in (3, 5):
        checkpointer.save(step, {"w": np.full((2, 3), float(step)), "step": np.asarray(step)},
                          None, {})
    fresh = Checkpointer(str(tmp_path))
    assert fresh.restored_step is None
    fresh.restore(_small_state(), step=3)
    assert fresh.restored_step == 3
    fresh.restore(_small_state())
    assert fresh.restored_step == 5
