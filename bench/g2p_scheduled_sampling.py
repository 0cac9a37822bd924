"""Scheduled sampling on CMUdict G2P: teacher forcing against an inverse-sigmoid schedule, per seed.

    python bench/g2p_scheduled_sampling.py --root runs/g2p_ss [--steps 70000] [--seeds 0 1]

Trains `configs/g2p_gru.py` (teacher forcing, p = 1) and `configs/g2p_gru_ss.py` (scheduled
sampling: p falls from 1 to 1/2 at the middle step and to about 0 at the end) for the same number
of steps and seed. The two arms of a seed train side by side, each pinned to its own core with one
XLA thread, so they share the machine alike and their step rates compare as a ratio (the arms swap
cores from one seed to the next: a core busier with other work favours neither). Running the
script again resumes unfinished runs from their checkpoints and skips finished ones, so it can be
stopped (SIGTERM to the script reaches both trainers, which save a checkpoint) and continued later.

Prints one row per run (validation WER / PER of the final model, teacher-forced and free-running
token accuracy, steps per second), the mean of each arm over seeds, and the scores of each arm's
runs decoded as an ensemble (and of all runs together), greedy and with beam search.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402 - sets thread counts before jax starts

common.set_threads(1)  # inherited by the training processes: one XLA thread each

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import g2p_gru  # noqa: E402
from flax_s2s import evaluate  # noqa: E402
from flax_s2s.data import registry, task_data  # noqa: E402
from flax_s2s.logs import read_records  # noqa: E402
from flax_s2s.schedules import inverse_sigmoid_k  # noqa: E402

# arm -> (short name of its workdirs, config)
ARMS = {"teacher forcing": ("tf", "configs/g2p_gru.py"),
        "scheduled sampling": ("ss", "configs/g2p_gru_ss.py")}


def run_name(arm: str, seed: int, steps: int) -> str:
    # The length is in the name: a run resumed under another length would change its schedules.
    return f"{ARMS[arm][0]}_{steps}_seed{seed}"


def final_record(workdir: str, steps: int) -> dict | None:
    """The validation record of the finished model, or None while the run is unfinished (the
    last checkpoint is written before the final evaluation, so it alone does not say done)."""
    path = os.path.join(workdir, "metrics.jsonl")
    records = read_records(path) if os.path.exists(path) else []
    finals = [r for r in records if r["split"] == "validation" and "wer" in r and r["step"] == steps]
    return finals[-1] if finals else None


def train_command(arm: str, seed: int, steps: int, workdir: str, core: int) -> list[str]:
    every = max(steps // 7, 1)  # seven evaluations and checkpoints per run
    command = [
        # taskset, not a preexec_fn: this process already runs threads (jax, tfds).
        "taskset", "-c", str(core), sys.executable, os.path.join(ROOT, "train.py"),
        f"--config={ARMS[arm][1]}", f"--workdir={workdir}", f"--config.seed={seed}",
        f"--config.num_train_steps={steps}", f"--config.eval_every={every}",
        f"--config.checkpoint_every={every}",
    ]
    if arm == "scheduled sampling":  # keep p = 1/2 at the middle step of this run's length
        command.append(f"--config.teacher_forcing.k={inverse_sigmoid_k(steps / 2)}")
    return command


def train_side_by_side(root: str, seed: int, steps: int) -> None:
    """Both arms of `seed` at once, each on its own core; waits for both. SIGTERM or SIGINT to
    this process reaches the trainers, which save a checkpoint and stop."""
    cores = sorted(os.sched_getaffinity(0))
    children: list[tuple[subprocess.Popen, str]] = []

    def forward(signum, frame):
        for child, _ in children:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index, arm in enumerate(ARMS):
            workdir = os.path.join(root, run_name(arm, seed, steps))
            if final_record(workdir, steps) is not None:
                continue
            log_path = workdir + ".log"
            with open(log_path, "a") as log:  # the child keeps its own copy of the descriptor
                children.append((subprocess.Popen(
                    train_command(arm, seed, steps, workdir, cores[(index + seed) % len(cores)]),
                    cwd=ROOT,
                    stdout=log, stderr=subprocess.STDOUT,
                    # Their own session: a Ctrl-C in the terminal reaches them once, through
                    # `forward`; a second SIGINT would make a trainer exit without saving.
                    start_new_session=True,
                ), log_path))
        for child, _ in children:
            child.wait()
    finally:
        for child, _ in children:
            if child.poll() is None:  # this script failed: do not leave a trainer holding a core
                child.terminate()
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for child, log_path in children:
        workdir = log_path.removesuffix(".log")
        if child.returncode != 0 or final_record(workdir, steps) is None:
            raise SystemExit(f"{workdir} did not finish (exit {child.returncode}); see {log_path}. "
                             "Run the same command again to resume it.")


def summary(workdir: str, steps: int) -> dict:
    final = final_record(workdir, steps)
    records = read_records(os.path.join(workdir, "metrics.jsonl"))
    train = [r for r in records if r["split"] == "train"]
    # Train records are written at log intervals; the span between the first and the last
    # includes the periodic evaluations (and any restart after a stop).
    rate = (train[-1]["step"] - train[0]["step"]) / max(train[-1]["wall_s"] - train[0]["wall_s"], 1e-9)
    return {"step": final["step"], "minutes": final["wall_s"] / 60, "steps/s": rate,
            "wer": final["wer"], "per": final["per"], "tf_acc": final["token_accuracy"],
            "fr_acc": final["fr_token_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True, help="directory of the runs (and their data)")
    parser.add_argument("--steps", type=int, default=g2p_gru.get_config().num_train_steps)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--beams", type=int, nargs="+", default=[0, 4],
                        help="beam sizes to decode the ensembles with (0: greedy)")
    args = parser.parse_args()
    os.makedirs(args.root, exist_ok=True)
    load_before = common.load_average()
    # Prepare the data once, before two processes would race to build it.
    registry.read_task_texts(g2p_gru.get_config(), task_data.default_data_dir(
        os.path.join(args.root, "any")), ("train",))
    for seed in args.seeds:
        train_side_by_side(args.root, seed, args.steps)

    print("\n".join(common.machine_lines(1, load_before)))
    print(f"- {args.steps} steps per run, batch {g2p_gru.get_config().batch_size}; both arms of a "
          "seed side by side, one core and one XLA thread each. steps/s spans the periodic "
          "evaluations (and restarts, if a run was stopped)\n")
    print("| arm | seed | step | wall min | steps/s | validation WER % | PER % | TF token acc | "
          "FR token acc |")
    print("|---|---|---|---|---|---|---|---|---|")
    means = {}
    for arm in ARMS:
        rows = [summary(os.path.join(args.root, run_name(arm, seed, args.steps)), args.steps)
                for seed in args.seeds]
        for seed, r in zip(args.seeds, rows, strict=True):
            print(f"| {arm} | {seed} | {r['step']} | {r['minutes']:.1f} | {r['steps/s']:.2f} | "
                  f"{r['wer']:.2f} | {r['per']:.2f} | {r['tf_acc']:.4f} | {r['fr_acc']:.4f} |")
        means[arm] = {key: sum(r[key] for r in rows) / len(rows) for key in ("wer", "per", "steps/s")}
    print()
    for arm, mean in means.items():
        print(f"{arm}: mean WER {mean['wer']:.2f}%, PER {mean['per']:.2f}%, "
              f"{mean['steps/s']:.2f} steps/s")
    print_ensembles(args.root, args.seeds, args.steps, args.beams)


def print_ensembles(root: str, seeds: list[int], steps: int, beams: list[int]) -> None:
    """Validation WER / PER of each arm's runs decoded as one ensemble, and of all runs."""
    groups = {arm: [run_name(arm, seed, steps) for seed in seeds] for arm in ARMS}
    groups["all runs"] = [name for names in groups.values() for name in names]
    print("\n| ensemble (probabilities averaged per step) | members | beam | WER % | PER % |")
    print("|---|---|---|---|---|")
    for label, names in groups.items():
        if len(names) < 2:
            continue
        workdirs = [os.path.join(root, name) for name in names]
        for beam in beams:
            scores = evaluate.evaluate_lexicon(workdirs[0], None, beam_size=beam, split="validation",
                                               ensemble=tuple(workdirs[1:]))
            print(f"| {label} | {len(names)} | {beam} | {scores['wer']:.2f} | {scores['per']:.2f} |")


if __name__ == "__main__":
    main()
