"""One trainer per workdir (flax_s2s.workdir_lock); with real trainers in test_reliability.py."""

import json
import os
import socket
import subprocess

import pytest

from flax_s2s import workdir_lock
from flax_s2s.workdir_lock import LOCK_FILE, WorkdirInUseError


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _write_lock(workdir, host, pid):
    (workdir / LOCK_FILE).write_text(json.dumps({"host": host, "pid": pid, "started": "then"}))


def test_the_lock_names_its_holder_refuses_a_second_taker_and_is_released(tmp_path):
    path = workdir_lock.acquire(str(tmp_path))
    holder = json.loads(open(path).read())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(WorkdirInUseError, match=rf"in use by a trainer: pid {os.getpid()} on this"):
        workdir_lock.acquire(str(tmp_path))
    workdir_lock.release(path)
    assert not os.path.exists(path)
    workdir_lock.release(workdir_lock.acquire(str(tmp_path)))  # free again


def test_a_dead_holders_lock_is_taken_over_with_a_warning(tmp_path):
    dead = _dead_pid()
    _write_lock(tmp_path, socket.gethostname(), dead)
    warnings = []
    path = workdir_lock.acquire(str(tmp_path), warn=warnings.append)
    assert json.loads(open(path).read())["pid"] == os.getpid()
    assert warnings == [f"warning: taking over the stale lock of pid {dead} (started then, no "
                        f"longer running) on {tmp_path}"]


def test_a_lock_from_another_host_is_refused_and_an_unreadable_one_taken_over(tmp_path):
    _write_lock(tmp_path, "elsewhere", 1)
    with pytest.raises(WorkdirInUseError, match="on host elsewhere .*delete the file"):
        workdir_lock.acquire(str(tmp_path))
    (tmp_path / LOCK_FILE).write_text("")  # its writer died between creating and writing it
    warnings = []
    workdir_lock.acquire(str(tmp_path), warn=warnings.append)
    assert "unreadable" in warnings[0]


def test_release_leaves_another_holders_lock(tmp_path):
    _write_lock(tmp_path, socket.gethostname(), 1)
    workdir_lock.release(str(tmp_path / LOCK_FILE))
    assert (tmp_path / LOCK_FILE).exists()
