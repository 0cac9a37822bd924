"""Fault injection: kill -9 and resume, SIGTERM, broken checkpoints, NaN losses, bad configs, bad
input files, a full disk."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds
from conftest import ROLLED, ROOT, poison_training_at, tiny_config

from flax_s2s import training
from flax_s2s.checkpoint import Checkpointer
from flax_s2s.data import cmudict_g2p, parallel_text, registry, tasks
from flax_s2s.errors import DiskFullError, FileFormatError
from flax_s2s.training.config import ConfigError, validate_config

STEPS = 16  # checkpoints at 4, 8, 12, 16; the three kills land at steps 8, 12 and 13
TINY_CONFIG = {
    "model.emb_dim": 8, "model.hidden_dim": 16, "model.attention_dim": 8, "batch_size": 16,
    "eval_batch_size": 500, "log_every": 1, "eval_every": 1000, "checkpoint_every": 4,
    "num_train_steps": STEPS, "max_checkpoints": 2, **ROLLED,
    # an average of the parameters and two microbatches a step: both resume exactly too
    "ema_decay": 0.9, "grad_accum_steps": 2,
}
TINY = [f"--config.{key}={value}" for key, value in TINY_CONFIG.items()]


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


def _config(data_dir, **overrides):
    """train.py's config under `_command`, for a run in this process (which spares a process
    start and its imports)."""
    return tiny_config(**{"data_dir": data_dir, **TINY_CONFIG, **overrides})


@pytest.fixture(scope="module")
def uninterrupted_workdir(tmp_path_factory, addition_data_dir):
    """The run uninterrupted, in this process: the train.py runs below that are killed and
    resumed must end with its parameters bit for bit."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    assert training.run(_config(addition_data_dir), str(workdir))["step"] == STEPS
    return workdir


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_workdir):
    return _final_params(uninterrupted_workdir)


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
    tmp_path, addition_data_dir, capsys
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

    # kill -9 left the lock behind; the next trainer (in this process) takes it over and trains
    # to the end
    capsys.readouterr()
    training.run(_config(addition_data_dir, num_train_steps=5), str(tmp_path))
    assert f"taking over the stale lock of pid {first.pid}" in capsys.readouterr().err
    assert not (tmp_path / "trainer.lock").exists()


@pytest.mark.slow
def test_sigterm_saves_exits_zero_and_resume_continues(tmp_path, addition_data_dir, uninterrupted,
                                                       capsys):
    code, out, err = _run_until_step(tmp_path, addition_data_dir, 6, signal.SIGTERM)
    assert code == 0, err[-2000:]
    stopped_at = int(out.split("stopped by SIGTERM at step ")[1].split(";")[0])
    assert stopped_at >= 6
    assert str(stopped_at) in os.listdir(tmp_path / "checkpoints")
    capsys.readouterr()
    training.run(_config(addition_data_dir), str(tmp_path))  # the resume, in this process
    assert f"at step {stopped_at}" in capsys.readouterr().out
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


def _empty_files(directory, only=None):
    """Truncates to zero length every file under `directory` (a power loss's damage), or only
    those whose path relative to it is `only`."""
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            if only is None or os.path.relpath(path, directory) == only:
                open(path, "w").close()


@pytest.mark.parametrize("damaged", [None, "config/metadata", "early_stopping/metadata"])
def test_any_unreadable_item_of_the_newest_checkpoint_falls_back_to_the_previous(tmp_path, damaged):
    """Every file of the newest checkpoint empty, or only its config or an extra: the resume's
    config, the state, the extras and a reader's variables all come from the previous one."""
    checkpointer = Checkpointer(str(tmp_path), max_to_keep=3)
    for step in (1, 2):
        state = {"w": np.full((2, 3), float(step)), "step": np.asarray(step)}
        checkpointer.save(step, state, None, {"seed": step}, extras={"early_stopping": {"n": step}})
    checkpointer.close()
    _empty_files(tmp_path / "2", damaged)
    fresh = Checkpointer(str(tmp_path))
    expected = {"seed": 1} if damaged in (None, "config/metadata") else {"seed": 2}
    with contextlib.ExitStack() as stack:
        if damaged != "early_stopping/metadata":
            stack.enter_context(pytest.warns(UserWarning, match=r"checkpoints?.*2.*unreadable"))
        assert fresh.restore_config(required=("seed",)) == expected
    with pytest.warns(UserWarning, match=r"checkpoints?.*2.*unreadable"):
        variables, step = fresh.restore_newest_variables()
    assert step == 1
    with pytest.warns(UserWarning, match=r"checkpoints?.*2.*unreadable"):
        restored = fresh.restore(_small_state())
    assert fresh.restored_step == 1 and fresh.restore_extra("early_stopping", 1) == {"n": 1}
    np.testing.assert_array_equal(restored["w"], np.full((2, 3), 1.0))
    assert fresh.all_steps() == [1] and os.path.isdir(tmp_path / "unreadable-2")


@pytest.mark.slow
def test_a_run_whose_newest_checkpoint_is_all_empty_files_resumes_from_the_previous(
        tmp_path, addition_data_dir, uninterrupted_workdir, uninterrupted):
    """A power loss's damage: the finished run's last step, every file empty; the rerun warns,
    sets it aside, resumes from the one before and ends with the uninterrupted run's parameters."""
    workdir = tmp_path / "run"
    shutil.copytree(uninterrupted_workdir, workdir)
    _empty_files(workdir / "checkpoints" / str(STEPS))
    with pytest.warns(UserWarning, match=rf"checkpoints/{STEPS} is unreadable"):
        training.run(_config(addition_data_dir), str(workdir))
    assert os.path.isdir(workdir / "checkpoints" / f"unreadable-{STEPS}")
    jax.tree.map(np.testing.assert_array_equal, _final_params(workdir), uninterrupted)


def _run_tiny(workdir, data_dir, **overrides):
    config = tiny_config(**{"data_dir": data_dir, "num_train_steps": 10, "log_every": 5,
                            "checkpoint_every": 5, "eval_every": 1000, **ROLLED,
                            "eval_batch_size": 500, "final_eval_split": "validation",
                            **overrides})
    return training.run(config, str(workdir))


def _records(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def test_nonfinite_skip_policy_counts_and_keeps_params_finite(tmp_path, addition_data_dir,
                                                              monkeypatch):
    poison_training_at(monkeypatch, 7)
    _run_tiny(tmp_path, addition_data_dir, nonfinite_policy="skip")
    train = [r for r in _records(tmp_path) if r["split"] == "train"]
    assert [r["nonfinite_steps"] for r in train] == [0, 1]
    params = ocp.StandardCheckpointer().restore(str(tmp_path / "checkpoints" / "10" / "state"))
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params["params"]))


def test_nonfinite_stop_policy_raises_and_keeps_last_good_checkpoint(tmp_path, addition_data_dir,
                                                                    monkeypatch):
    poison_training_at(monkeypatch, 7)
    with pytest.raises(training.NonFiniteError, match="up to step 10"):
        _run_tiny(tmp_path, addition_data_dir, nonfinite_policy="stop")
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["5"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"max_src_len": 1}, "config.max_src_len=1: must be >= 2"),
        ({"max_tgt_len": 0}, "config.max_tgt_len=0: must be >= 2"),
        ({"batch_size": 0}, "config.batch_size=0: must be > 0"),
        ({"task": "sorting"}, "config.task='sorting': must be one of"),
        ({"too_long": "clip"}, "config.too_long='clip': must be one of ['drop', 'error', 'truncate']"),
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


# --- every file a run reads names itself when it is bad ---


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"seed": 0, "task"', r"metadata:1: not valid JSON at column 19 \(Expecting ':'"),
        ('["seed", "task"]', r"metadata: a JSON list; expected the config saved with the checkpoint"),
        ('{"seed": 0, "task": "addition"}', r"metadata: the saved config lacks \['max_src_len', "),
    ],
)
def test_a_damaged_saved_config_is_named_before_a_resume_reads_anything(tmp_path, content, message):
    config = tiny_config(data_dir=str(tmp_path / "no-data"))  # never read: the config fails first
    saved = json.loads(config.to_json())
    Checkpointer(str(tmp_path / "checkpoints")).save(1, _small_state(), None, saved)
    assert Checkpointer(str(tmp_path / "checkpoints")).restore_config(1) == saved
    path = tmp_path / "checkpoints" / "1" / "config" / "metadata"
    path.write_text(content)
    with pytest.raises(FileFormatError, match=rf"^{re.escape(str(path))}") as error:
        training.run(config, str(tmp_path))
    assert re.search(message, str(error.value)), error.value


def test_a_bad_lexicon_line_is_named_through_the_tfds_preparation(tmp_path):
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_bytes(b"CAT\tK AE T\nDOG D AO G\n")
    with pytest.raises(FileFormatError, match=rf"^{re.escape(str(lexicon))}:2: expected "
                       r"WORD<TAB>PHONES, got 'DOG D AO G'$"):
        cmudict_g2p.prepare_file(lexicon, str(tmp_path / "tfds"))


def test_parallel_files_of_unequal_lengths_name_both_files_and_their_line_counts(tmp_path):
    (tmp_path / "train.src").write_text("a\nb\nc\n")
    (tmp_path / "train.tgt").write_text("x\ny\n")
    config = tiny_config(task="parallel_text", data_path=str(tmp_path))
    with pytest.raises(FileFormatError) as error:
        registry.read_task_texts(config, str(tmp_path / "tfds"), ("train",))
    src, tgt = tmp_path / "train.src", tmp_path / "train.tgt"
    assert str(error.value).startswith(f"{src}:3: no partner line in {tgt} ({src} has 3 lines, "
                                       f"{tgt} has 2; expected line-aligned files")


@pytest.fixture(scope="module")
def tiny_prepared(tmp_path_factory):
    """The addition task prepared with a few examples a split, as TFDS writes it."""

    class TinyAddition(tasks.Addition, skip_registration=True):
        name = "addition"
        SPLIT_SIZES = {"test": 3, "validation": 3, "train": 6}

    data_dir = tmp_path_factory.mktemp("tiny_tfds")
    tfds.disable_progress_bar()
    TinyAddition(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return data_dir


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("dataset_info.json", '{\n  "name": "addition",\n  "vers',
         r"dataset_info.json:3: not valid JSON at column 3 \(Unterminated string"),
        ("features.json", "{}", r"features.json: no \['pythonClassName'\] in it"),
    ],
)
def test_corrupt_tfds_metadata_is_named_by_both_readers(tmp_path, tiny_prepared, name, content,
                                                       message):
    data_dir = tmp_path / "tfds"
    shutil.copytree(tiny_prepared, data_dir)
    assert len(parallel_text.read_tfds_translation("addition", str(data_dir), ("train",))["train"]) == 6
    path = data_dir / "addition" / "1.0.0" / name
    path.write_text(content)
    for read in (lambda: tasks.prepare("addition", str(data_dir)),  # a task generated in code
                 lambda: parallel_text.read_tfds_translation("addition", str(data_dir), ("train",))):
        with pytest.raises(FileFormatError, match=rf"^{re.escape(str(path))}") as error:
            read()
        assert re.search(message, str(error.value)), error.value
        assert "expected the JSON object of metadata TFDS writes" in str(error.value)


# --- a full disk ---


def _tmpfs_bytes(path) -> int:
    """What the files under `path` take on a tmpfs: each file's size in whole 4 KiB pages."""
    return sum(-(-os.path.getsize(os.path.join(d, f)) // 4096) * 4096
               for d, _, files in os.walk(path) for f in files)


@contextlib.contextmanager
def _small_filesystem(directory, size: int):
    """A tmpfs of `size` bytes mounted on `directory` for the block (skips unless root may mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    directory.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def _fill_once_saved(checkpoint_dir, filesystem, stop):
    """Waits until `checkpoint_dir` is committed, then fills `filesystem` but for half the space
    that checkpoint takes there: the next save cannot fit. (Orbax splits arrays over a varying
    number of files, so the size a checkpoint takes on a tmpfs is only known once it is there.)"""
    while not os.path.isdir(checkpoint_dir):
        if stop.wait(0.001):
            return
    room = _tmpfs_bytes(checkpoint_dir) // 2
    free = os.statvfs(filesystem).f_bavail * os.statvfs(filesystem).f_frsize
    with open(filesystem / "ballast", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, free - room)


def test_a_disk_that_fills_during_a_save_stops_the_run_and_a_rerun_with_space_resumes_exactly(
    tmp_path, addition_data_dir, uninterrupted_workdir, uninterrupted, capsys
):
    reference = uninterrupted_workdir  # the same run uninterrupted (TINY_CONFIG)
    room = 8 * _tmpfs_bytes(reference / "checkpoints" / str(STEPS)) + _tmpfs_bytes(reference)
    config = _config(addition_data_dir)
    stop = threading.Event()
    with _small_filesystem(tmp_path / "small", room) as small:
        workdir = small / "run"
        filler = threading.Thread(target=_fill_once_saved,
                                  args=(workdir / "checkpoints" / "4", small, stop))
        filler.start()
        try:
            with pytest.raises(DiskFullError) as error:
                training.run(config, str(workdir))
        finally:
            stop.set()
            filler.join()
        kept = os.listdir(workdir / "checkpoints")  # the cut-short save is removed
        shutil.copytree(workdir, tmp_path / "copy")
    message = str(error.value)
    assert message.startswith("the disk is full (ENOSPC, no space left on device): checkpoint ")
    failed = int(re.search(r"checkpoint (\d+) could not be written", message).group(1))
    newest = max(map(int, kept))
    assert newest == failed - 4  # normally 8 failed and 4 is kept; later if the filler ran late
    assert f"the newest checkpoint saved whole is {workdir / 'checkpoints' / str(newest)}" in message
    capsys.readouterr()
    assert training.run(config, str(tmp_path / "copy"))["step"] == STEPS
    assert f"at step {newest}\n" in capsys.readouterr().out  # "resumed from ... at step 4"
    jax.tree.map(np.testing.assert_array_equal, _final_params(tmp_path / "copy"), uninterrupted)
