"""train.py end to end, in a subprocess, as a user runs it."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROLLED_FLAGS, ROOT

TINY = [
    "--config.model.emb_dim=16", "--config.model.hidden_dim=32", "--config.model.attention_dim=16",
    "--config.batch_size=32", "--config.eval_batch_size=500", "--config.log_every=10",
    "--config.eval_every=10", "--config.checkpoint_every=10", *ROLLED_FLAGS,
]


def _train(workdir, data_dir, *extra, check=True):
    command = [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={workdir}",
               f"--config={os.path.join(ROOT, 'configs/addition_lstm.py')}",
               f"--config.data_dir={data_dir}", *TINY, *extra]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"train.py failed:\n{result.stdout}\n{result.stderr[-3000:]}")
    return result


@pytest.mark.slow
def test_train_py_runs_writes_metrics_and_checkpoints_then_resumes(tmp_path, addition_data_dir):
    workdir = tmp_path / "run"
    result = _train(workdir, addition_data_dir, "--config.num_train_steps=20")
    assert "final test" in result.stdout and "wall time" in result.stdout
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert {(r["step"], r["split"]) for r in records} >= {
        (10, "train"), (20, "train"), (10, "validation"), (20, "test")
    }
    test_record = next(r for r in records if r["split"] == "test")
    assert 0.0 <= test_record["exact_match"] <= 1.0 and test_record["loss"] > 0
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "20"]

    # A change the saved state cannot follow is refused before anything is read, naming each key
    refused = _train(workdir, addition_data_dir, "--config.num_train_steps=30",
                     "--config.model.hidden_dim=64", "--config.optimizer.learning_rate=0.5",
                     check=False)
    assert refused.returncode != 0
    assert "config.model.hidden_dim: saved 32, requested 64" in refused.stderr
    assert "config.optimizer.learning_rate: saved" in refused.stderr
    assert f"--config.init_from={workdir}" in refused.stderr
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "20"]

    resumed = _train(workdir, addition_data_dir, "--config.num_train_steps=30")
    assert "resumed" in resumed.stdout and "at step 20" in resumed.stdout
    assert "resuming with changed settings (saved -> this run): num_train_steps 20 -> 30" in (
        resumed.stdout
    )
    assert "30" in os.listdir(workdir / "checkpoints")


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.model.hiden_dim=3", "hiden_dim"),
        ("--config.num_train_steps=many", "num_train_steps"),
        ("--config.max_tgt_len=1", "max_tgt_len"),
        ("--config.model.cell=rnn", "model.cell"),
    ],
)
def test_bad_overrides_fail_before_anything_runs_naming_the_key(tmp_path, override, message):
    result = _train(tmp_path / "bad", tmp_path / "no_data", override, check=False)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not (tmp_path / "no_data").exists(), "failed config should not prepare data"


def test_a_missing_data_file_is_one_error_line(tmp_path):
    data = tmp_path / "text"  # parallel text with a train split only
    data.mkdir()
    (data / "train.src").write_text("ab\n")
    (data / "train.tgt").write_text("ba\n")
    result = _train(tmp_path / "run", tmp_path / "tfds", "--config.task=parallel_text",
                    f"--config.data_path={data}", check=False)
    assert result.returncode != 0
    assert "validation.src: no such file" in result.stderr and "Traceback" not in result.stderr, (
        result.stderr[-2000:])


def test_the_console_script_trains_as_train_py_does(tmp_path):
    """`flax-s2s-train` (pyproject's scripts; installed with the package) reads the same configs
    from the repository root: a bad override fails the same way, before any data is read."""
    script = os.path.join(os.path.dirname(sys.executable), "flax-s2s-train")
    result = subprocess.run([script, f"--workdir={tmp_path / 'run'}", "--config.max_tgt_len=1",
                             f"--config.data_dir={tmp_path / 'no_data'}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "error: config.max_tgt_len=1: must be >= 2" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "no_data").exists()
