"""Soak test of interrupted training: many kill -9s and SIGTERMs at random moments, each followed
by a resume, and every checkpoint compared bit for bit with an uninterrupted run's.

    taskset -c 1 python bench/soak.py --root DIR --interruptions 50 [--seed 0] [--steps 40]

A tiny LSTM on the addition task (the config the reliability tests use: a moving average of the
parameters and two microbatches a step) trains in rounds. A round is one workdir trained to the
end with `train.py`, interrupted again and again: each process started there gets one signal
(kill -9 or SIGTERM) at a moment drawn from the seed (a time during startup, or a delay after a
step's log line, which lands in a step, an eval or a checkpoint save), then the next process
resumes. After every interruption each checkpoint of the workdir (state and data position) must
equal the uninterrupted run's checkpoint of that step bit for bit, and at the end of a round its
final parameters; a mismatch is reported with the interruptions that came before it. Rounds run
until `--interruptions` interruptions have been sent. The table gives the interruptions by kind
and by the phase the run was in when the signal was sent (read from its log and from orbax's
temporary directory of a save in progress), and the outcome.

Every random choice comes from `--seed` (one numpy Generator); when a moment lands depends on the
machine's speed, so the phases seen vary between machines, the choices do not.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402 - sets thread counts before jax starts

common.set_threads(1)  # inherited by every train.py started here

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402

# The addition task at the reliability tests' size (the same problems, fewer a split): every
# process reads all splits, and the full 204k examples would make each start 8 s longer.
SPLIT_SIZES = {"test": 500, "validation": 500, "train": 10_000}
EVAL_EVERY, CHECKPOINT_EVERY = 5, 4
WINDOW = 8  # a step moment falls in the next WINDOW steps after the resumed one
STARTUP_SHARE = 0.15  # the share of moments drawn as a time during startup
SIGTERM_SHARE = 0.4  # the share of SIGTERMs among the signals
MAX_DELAY_S = 0.4  # a step moment: this much at most after the step's log line


def flags(steps: int) -> list[str]:
    """The short config: tests/test_reliability.py's tiny LSTM, with evals during training."""
    return [
        "--config.model.emb_dim=8", "--config.model.hidden_dim=16",
        "--config.model.attention_dim=8", "--config.batch_size=16",
        "--config.eval_batch_size=100", "--config.log_every=1",
        f"--config.eval_every={EVAL_EVERY}", f"--config.checkpoint_every={CHECKPOINT_EVERY}",
        f"--config.num_train_steps={steps}", "--config.max_checkpoints=2",
        "--config.max_src_len=13", "--config.max_tgt_len=13",
        "--config.ema_decay=0.9", "--config.grad_accum_steps=2",
    ]


def prepare_data(data_dir: str) -> None:
    """The addition task at SPLIT_SIZES under `data_dir`, read by train.py as task "addition"."""
    import tensorflow_datasets as tfds

    from flax_s2s.data import tasks

    tfds.disable_progress_bar()

    class SoakAddition(tasks.Addition, skip_registration=True):
        name = "addition"

    SoakAddition.SPLIT_SIZES = SPLIT_SIZES
    SoakAddition(data_dir=data_dir, file_format="array_record").download_and_prepare()


@dataclasses.dataclass
class Interruption:
    """One signal sent to one train.py process, and what was seen of it."""

    round: int
    kind: str  # "SIGKILL" or "SIGTERM"
    moment: str  # "startup +1.23s" or "step 7 +0.12s" (what was drawn)
    phase: str = ""  # what the run was doing when the signal was sent
    returncode: int | None = None
    resumed_from: int | None = None


class TrainProcess:
    """A train.py process whose stdout lines are read by a thread as they come."""

    def __init__(self, command: list[str]) -> None:
        self.started = time.monotonic()
        self.started_at = time.time()  # to compare with file times
        self.first_step_s: float | None = None  # seconds from the start to the first step line
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.stderr = ""
        self._new_line = threading.Condition()
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._out.start()
        self._err.start()

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            with self._new_line:
                if self.first_step_s is None and line.startswith("step "):
                    self.first_step_s = time.monotonic() - self.started
                self.lines.append(line.rstrip("\n"))
                self._new_line.notify_all()
        with self._new_line:
            self._new_line.notify_all()

    def _read_stderr(self) -> None:
        self.stderr = self.process.stderr.read()

    def wait_for_step(self, step: int) -> bool:
        """Blocks until the log line of `step` is printed; False if the process ends first."""
        pattern = re.compile(rf"^step {step}/")
        with self._new_line:
            while not any(pattern.match(line) for line in self.lines):
                if self.process.poll() is not None and not self._out.is_alive():
                    return False
                self._new_line.wait(timeout=0.5)
        return True

    def finish(self, timeout: float = 600) -> int:
        code = self.process.wait(timeout=timeout)
        self._out.join()
        self._err.join()
        return code


def newest_step(checkpoints: str) -> int | None:
    steps = [int(n) for n in os.listdir(checkpoints) if n.isdigit()] if os.path.isdir(checkpoints) else []
    return max(steps, default=None)


def partial_saves(checkpoints: str) -> list[str]:
    """orbax's temporary directories of saves in progress (or cut short by a kill)."""
    names = os.listdir(checkpoints) if os.path.isdir(checkpoints) else []
    return [os.path.join(checkpoints, name) for name in names if "orbax-checkpoint-tmp" in name]


def phase_now(process: TrainProcess, checkpoints: str, steps: int) -> str:
    """What the run is doing, from its log lines so far and orbax's temporary directory."""
    if any(os.path.getmtime(path) >= process.started_at for path in partial_saves(checkpoints)):
        return "checkpoint save"  # one this process is writing (a killed one's may be left)
    step_lines = [line for line in process.lines if re.match(r"^step \d+/", line)]
    if not step_lines:
        return "startup"
    last = process.lines[-1]
    step = int(step_lines[-1].split()[1].split("/")[0])
    if step == steps:
        return "final eval and save"
    if re.match(r"^step \d+/", last) and step % EVAL_EVERY == 0:
        return "eval"
    return "step"


def same_checkpoint(path: str, reference: str) -> list[str]:
    """What differs between two checkpoint step directories: state leaves (bit for bit) and the
    data position files. Empty when equal."""
    ours = ocp.StandardCheckpointer().restore(os.path.join(path, "state"))
    theirs = ocp.StandardCheckpointer().restore(os.path.join(reference, "state"))
    differences = []
    flat_ours, flat_theirs = _flat(ours), _flat(theirs)
    if flat_ours.keys() != flat_theirs.keys():
        differences.append(f"state keys {sorted(flat_ours.keys() ^ flat_theirs.keys())}")
    for key in sorted(flat_ours.keys() & flat_theirs.keys()):
        a, b = np.asarray(flat_ours[key]), np.asarray(flat_theirs[key])
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            differences.append(f"state {key}")
    for name in sorted(n for n in os.listdir(os.path.join(reference, "data")) if n.startswith("process_")):
        with open(os.path.join(reference, "data", name)) as f, \
                open(os.path.join(path, "data", name)) as g:
            if f.read() != g.read():
                differences.append(f"data {name}")
    return differences


def _flat(tree) -> dict:
    """{path: leaf} of a restored state tree (dicts, lists and tuples)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


class Soak:
    def __init__(self, root: str, steps: int, seed: int) -> None:
        self.root, self.steps = os.path.abspath(root), steps
        self.rng = np.random.default_rng(seed)
        self.data_dir = os.path.join(self.root, "tfds")
        self.reference = os.path.join(self.root, "reference")
        self.interruptions: list[Interruption] = []
        self.mismatches: list[str] = []
        self.failures: list[str] = []
        self.verified: dict[str, set[int]] = collections.defaultdict(set)
        self.startup_s = 10.0  # then the time to the first step line of the latest process

    def command(self, workdir: str, *extra: str) -> list[str]:
        return [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={workdir}",
                f"--config.data_dir={self.data_dir}", *flags(self.steps), *extra]

    def run_reference(self) -> None:
        """The uninterrupted run, with a checkpoint at every step (all kept) to compare with."""
        if os.path.isdir(self.reference):
            shutil.rmtree(self.reference)
        process = TrainProcess(self.command(self.reference, "--config.checkpoint_every=1",
                                            f"--config.max_checkpoints={self.steps + 1}"))
        if process.finish() != 0:
            raise SystemExit(f"the uninterrupted run failed:\n{process.stderr[-3000:]}")

    def check(self, workdir: str, history: list[Interruption]) -> None:
        """Compares each not yet compared checkpoint of `workdir` with the reference's."""
        checkpoints = os.path.join(workdir, "checkpoints")
        for name in sorted(os.listdir(checkpoints), key=lambda n: (not n.isdigit(), n)):
            if not name.isdigit() or int(name) in self.verified[workdir]:
                continue
            differences = same_checkpoint(os.path.join(checkpoints, name),
                                          os.path.join(self.reference, "checkpoints", name))
            self.verified[workdir].add(int(name))
            if differences:
                schedule = "; ".join(f"{i.kind} at {i.moment} ({i.phase})" for i in history)
                self.mismatches.append(f"{workdir} step {name}: {', '.join(differences)} after "
                                       f"interruptions [{schedule}]")

    def draw(self, round_: int, resumed: int) -> tuple[Interruption, int | None, float]:
        """(the interruption, the step whose log line starts its delay or None, the delay)."""
        kind = "SIGTERM" if self.rng.random() < SIGTERM_SHARE else "SIGKILL"
        if self.rng.random() < STARTUP_SHARE:
            delay = float(self.rng.uniform(0, self.startup_s))
            return Interruption(round_, kind, f"startup +{delay:.2f}s"), None, delay
        step = int(self.rng.integers(resumed + 1, min(resumed + WINDOW, self.steps) + 1))
        delay = float(self.rng.uniform(0, MAX_DELAY_S))
        return Interruption(round_, kind, f"step {step} +{delay:.2f}s"), step, delay

    def interrupt_once(self, workdir: str, round_: int, history: list[Interruption]) -> bool:
        """Starts one process in `workdir` and signals it at a drawn moment; True when the run
        got to its end instead (the round is complete)."""
        checkpoints = os.path.join(workdir, "checkpoints")
        resumed = newest_step(checkpoints) or 0
        process = TrainProcess(self.command(workdir))
        if resumed >= self.steps:  # killed after its last save: only the final eval is left
            interruption, step = Interruption(round_, "none", "none"), -1
        else:
            interruption, step, delay = self.draw(round_, resumed)
        interruption.resumed_from = resumed
        if step is None or (step > 0 and process.wait_for_step(step)):
            time.sleep(max(0.0, delay - (time.monotonic() - process.started)) if step is None
                       else delay)
        if step != -1 and process.process.poll() is None:
            interruption.phase = phase_now(process, checkpoints, self.steps)
            process.process.send_signal(getattr(signal, interruption.kind))
        code = process.finish()
        if process.first_step_s is not None:  # startup moments: within this machine's startup
            self.startup_s = process.first_step_s
        completed = code == 0 and any(line.startswith("wall time:") for line in process.lines)
        if interruption.phase:
            interruption.returncode = code
            self.interruptions.append(interruption)
            history.append(interruption)
            expected = ({-signal.SIGKILL} if interruption.kind == "SIGKILL"
                        else {0, -signal.SIGTERM})  # SIGTERM before the handler is set: -15
            if code not in expected:
                self.failures.append(f"{interruption}: exit {code}\n{process.stderr[-2000:]}")
        elif code != 0:
            self.failures.append(f"{workdir}: exit {code} without a signal\n{process.stderr[-2000:]}")
            raise SystemExit("\n".join(self.failures))
        self.check(workdir, history)
        print(f"round {round_} from step {resumed}: {interruption.kind} at {interruption.moment} "
              f"({interruption.phase or 'not sent'}), exit {code}", flush=True)
        return completed

    def run(self, interruptions: int) -> int:
        """Rounds until `interruptions` signals are sent; returns the rounds completed."""
        rounds = 0
        while len(self.interruptions) < interruptions:
            workdir = os.path.join(self.root, f"round-{rounds}")
            if os.path.isdir(workdir):
                shutil.rmtree(workdir)
            history: list[Interruption] = []
            while not self.interrupt_once(workdir, rounds, history):
                if len(self.interruptions) >= interruptions:
                    break
            else:
                rounds += 1
                print(f"round {rounds - 1} complete after {len(history)} interruptions", flush=True)
                continue
            # the last round, cut short by the count: train it to the end to check it too
            process = TrainProcess(self.command(workdir))
            if process.finish() != 0:
                self.failures.append(f"{workdir}: final resume failed\n{process.stderr[-2000:]}")
            self.check(workdir, history)
            rounds += 1
        return rounds


def table(interruptions: list[Interruption]) -> list[str]:
    phases = ["startup", "step", "eval", "checkpoint save", "final eval and save"]
    counts = collections.Counter((i.kind, i.phase) for i in interruptions)
    rows = [[kind, *[counts[(kind, phase)] for phase in phases],
             sum(counts[(kind, phase)] for phase in phases)] for kind in ("SIGKILL", "SIGTERM")]
    rows.append(["all", *[sum(counts[(k, p)] for k in ("SIGKILL", "SIGTERM")) for p in phases],
                 len(interruptions)])
    return common.table(["signal", *phases, "total"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="directory for the data and the workdirs")
    parser.add_argument("--interruptions", type=int, default=50)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=common.RESULTS, help="the RESULTS.md to append to")
    args = parser.parse_args()
    load_before, start = common.load_average(), time.time()
    soak = Soak(args.root, args.steps, args.seed)
    prepare_data(soak.data_dir)
    soak.run_reference()
    rounds = soak.run(args.interruptions)
    ok = not soak.mismatches and not soak.failures
    checked = sum(len(steps) for steps in soak.verified.values())
    lines = [
        "```bash", f"taskset -c {','.join(map(str, common.pinned_cores()))} python bench/soak.py "
        f"--root DIR --interruptions {args.interruptions} --steps {args.steps} --seed {args.seed}",
        "```", "", *common.machine_lines(1, load_before),
        f"- Wall time: {time.time() - start:.0f} s; {rounds} rounds of {args.steps} steps, "
        f"{len(soak.interruptions)} interruptions, {checked} checkpoints compared with the "
        "uninterrupted run's (state bit for bit, data position)",
        "", *table(soak.interruptions), "",
        f"- Outcome: {'every checkpoint and every final state bit-identical' if ok else 'FAILED'}",
        *[f"- Mismatch: {m}" for m in soak.mismatches],
        *[f"- Failure: {f.splitlines()[0]}" for f in soak.failures],
    ]
    common.append_section("Soak: interrupted and resumed training (`bench/soak.py`)", lines,
                          args.results)
    for failure in soak.failures:
        print(failure, file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
