"""The probe suite (tests/probes.py): each bad input or fault must end its command with the
expected exit code and one `error:` line naming what is wrong (no traceback), and change no file
but the command's own outputs. The commands run in this process (their `run()`, as the console
scripts do), so the fast probes import nothing twice and compile nothing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROLLED, ROOT
from probes import PROBES, Probe, make_inputs, run_command

from flax_s2s import workdir_lock


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("probes"))
    make_inputs(root)
    return root


def tree_state(root: str, skip: str | None = None) -> dict[str, str]:
    """Every path under `root` (directories included, so an empty one left behind counts) with
    the hash of its contents; `skip` (a directory) left out."""
    state = {}
    for directory, dirs, files in os.walk(root):
        if skip is not None and os.path.commonpath([directory, skip]) == skip:
            dirs[:] = []
            continue
        state[os.path.relpath(directory, root)] = "dir"
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                state[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return state


@contextlib.contextmanager
def fault(kind: str, workdir: str, denied: str, monkeypatch):
    """The fault a probe runs under."""
    if kind == "lock":
        lock = workdir_lock.acquire(workdir)
        try:
            yield
        finally:
            workdir_lock.release(lock)
        return
    if kind == "unwritable":  # as root, permissions are not enforced: the OS's answer is set
        real = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
            False if os.path.abspath(path) == denied else real(path, mode, **kw)))
    yield


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_a_bad_input_gets_one_error_line_and_changes_nothing(probe: Probe, inputs, tmp_path,
                                                             monkeypatch):
    workdir = str(tmp_path / "w")
    argv = [a.format(root=inputs, w=workdir) for a in probe.args]
    monkeypatch.chdir(ROOT)
    own = workdir if probe.writes_workdir else None  # the one path it may write
    before = tree_state(inputs), tree_state(str(tmp_path), skip=own)
    denied = probe.unwritable.format(root=inputs, tmp=str(tmp_path))
    with fault(probe.fault, workdir, denied, monkeypatch):
        code, message, printed = run_command(probe.command, argv)
    assert code == probe.code, (code, message, printed[-2000:])
    assert "Traceback" not in printed and "Traceback" not in message, printed[-3000:]
    assert re.fullmatch(f"error: {probe.pattern}.*", message), message
    assert "\n" not in message, message
    assert tree_state(inputs) == before[0], "a probe changed its inputs"
    assert tree_state(str(tmp_path), skip=own) == before[1], "a failed command left files behind"


SLOW_C_CALL = """
import os, sys, zlib
from flax_s2s.signals import GracefulStop
data = os.urandom(200_000_000)
with GracefulStop() as stop:
    print("ready", flush=True)
    zlib.compress(data, 9)  # seconds in C with the GIL released, as an XLA compile runs
    print("compressed", stop.requested, flush=True)
"""


def test_a_second_sigint_inside_a_long_compiled_call_exits_at_once():
    """Python runs signal handlers between bytecodes, so both SIGINTs once waited for the call."""
    child = subprocess.Popen([sys.executable, "-c", SLOW_C_CALL], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGINT)
        time.sleep(0.3)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
        waited = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 128 + signal.SIGINT, (child.returncode, err)
    assert "compressed" not in out and waited < 2.0, (waited, out)
    assert err.splitlines() == [
        "SIGINT received: finishing the current step, then saving a checkpoint (send it again "
        "to exit at once)", "second SIGINT: exiting now without saving"]


@pytest.mark.slow
def test_a_trained_workdir_meets_reruns_lost_metrics_and_bad_decode_input(inputs, tmp_path,
                                                                         capsys, monkeypatch):
    """One tiny run (in process), then: keep_best by a metric no eval reports is said at the
    first eval; a rerun of the finished run adds no second final record; a resume without
    metrics.jsonl warns; decode refuses min_len over the maximum and, with --strict, a symbol
    outside the vocabulary, and reads a BOM as nothing."""
    from conftest import tiny_config

    from flax_s2s import training
    from flax_s2s.logs import read_records

    workdir = str(tmp_path / "run")
    config = tiny_config(**{
        "task": "parallel_text", "data_path": f"{inputs}/data", **ROLLED,
        "batch_size": 8, "eval_batch_size": 8, "num_train_steps": 2,
        "eval_every": 1, "log_every": 1, "checkpoint_every": 2, "keep_best": 1,
        "best_metric": "validation/bleu", "model.emb_dim": 8, "model.hidden_dim": 8,
        "model.attention_dim": 8})
    training.run(config.copy_and_resolve_references(), workdir)
    out = capsys.readouterr().out
    assert out.count("warning: config.best_metric='validation/bleu': the eval at step 1 "
                     "reports no such metric") == 1, out
    metrics = os.path.join(workdir, "metrics.jsonl")

    def finals():
        return [(r["step"], r["split"]) for r in read_records(metrics) if r["split"] == "test"]

    assert finals() == [(2, "test")]
    training.run(config.copy_and_resolve_references(), workdir)
    assert "the run finished at step 2 already" in capsys.readouterr().out
    assert finals() == [(2, "test")], "a rerun of a finished run wrote a second final record"

    os.remove(metrics)
    config.num_train_steps = 3
    training.run(config.copy_and_resolve_references(), workdir)
    assert f"warning: resuming at step 2, but {metrics} is missing" in capsys.readouterr().out

    monkeypatch.chdir(ROOT)
    lines = tmp_path / "lines.txt"
    lines.write_bytes(b"\xef\xbb\xbf1+2\r\n1+x\n")
    code, message, _ = run_command("decode", [f"--workdir={workdir}", f"--input={lines}",
                                              "--min_len=50"])
    assert (code, message) == (1, "error: --min_len=50: must be >= 0 and below the model's "
                                  "max_tgt_len=13 (EOS included)")
    code, message, _ = run_command("decode", [f"--workdir={workdir}", f"--input={lines}",
                                              "--strict"])
    assert (code, message) == (1, "error: line 2: 1 symbol(s) outside the source vocabulary "
                                  "read as <unk>: 'x' (--strict)")
    plain = tmp_path / "plain.txt"
    plain.write_text("1+2\n")
    printed = [run_command("decode", [f"--workdir={workdir}", f"--input={path}"])[2]
               for path in (lines, plain)]
    outputs = [[line for line in p.splitlines() if not line.startswith("line ")] for p in printed]
    assert outputs[0][0] == outputs[1][0] and len(outputs[0]) == 2, printed  # the BOM: nothing
