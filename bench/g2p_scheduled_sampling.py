"""Scheduled sampling on CMUdict G2P: teacher forcing against an inverse-sigmoid schedule, per seed.

    python bench/g2p_scheduled_sampling.py --root runs/g2p_ss [--steps 35000] [--seeds 0 1]

Trains `configs/g2p_gru.py` (teacher forcing, p = 1) and `configs/g2p_gru_ss.py` (scheduled
sampling: p falls from 1 to 1/2 at the middle step and to about 0 at the end) for the same number
of steps and seed. The two arms of a seed train side by side, each pinned to its own core with one
XLA thread, so they share the machine alike and their step rates compare as a ratio. Running the
script again resumes unfinished runs from their checkpoints and skips finished ones, so it can be
stopped (SIGTERM saves a checkpoint) and continued later.

Prints one row per run (validation WER / PER of the final model, teacher-forced and free-running
token accuracy, steps per second) and the mean of each arm over seeds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402 - sets thread counts before jax starts

common.set_threads(1)  # inherited by the training processes: one XLA thread each

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import g2p_gru  # noqa: E402
from flax_s2s.data import task_data  # noqa: E402
from flax_s2s.forcing import inverse_sigmoid_k  # noqa: E402
from flax_s2s.logs import read_records  # noqa: E402

ARMS = {"teacher forcing": "configs/g2p_gru.py", "scheduled sampling": "configs/g2p_gru_ss.py"}


def run_name(arm: str, seed: int) -> str:
    return f"{'tf' if arm == 'teacher forcing' else 'ss'}_seed{seed}"


def finished(workdir: str, steps: int) -> bool:
    checkpoints = os.path.join(workdir, "checkpoints")
    saved = [int(name) for name in os.listdir(checkpoints) if name.isdigit()] if os.path.isdir(
        checkpoints) else []
    return steps in saved


def train_command(arm: str, seed: int, steps: int, workdir: str) -> list[str]:
    every = max(steps // 7, 1)  # seven evaluations and checkpoints per run
    command = [
        sys.executable, os.path.join(ROOT, "train.py"), f"--config={ARMS[arm]}", f"--workdir={workdir}",
        f"--config.seed={seed}", f"--config.num_train_steps={steps}",
        f"--config.eval_every={every}", f"--config.checkpoint_every={every}",
    ]
    if arm == "scheduled sampling":  # keep p = 1/2 at the middle step of this run's length
        command.append(f"--config.teacher_forcing.k={inverse_sigmoid_k(steps / 2)}")
    return command


def train_side_by_side(root: str, seed: int, steps: int) -> None:
    """Both arms of `seed` at once, each on its own core; waits for both."""
    cores = sorted(os.sched_getaffinity(0))
    processes = []
    for index, arm in enumerate(ARMS):
        workdir = os.path.join(root, run_name(arm, seed))
        if finished(workdir, steps):
            continue
        core = {cores[index % len(cores)]}
        log = open(os.path.join(root, run_name(arm, seed) + ".log"), "a")  # noqa: SIM115
        processes.append((subprocess.Popen(
            train_command(arm, seed, steps, workdir), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=lambda core=core: os.sched_setaffinity(0, core),
        ), log))
    for process, log in processes:
        process.wait()
        log.close()
        if process.returncode != 0:
            raise SystemExit(f"a run failed (exit {process.returncode}); see {log.name}")


def summary(workdir: str) -> dict:
    records = read_records(os.path.join(workdir, "metrics.jsonl"))
    final = [r for r in records if r["split"] == "validation" and "wer" in r][-1]
    train = [r for r in records if r["split"] == "train" and "wall_s" in r]
    rate = (train[-1]["step"] - train[0]["step"]) / (train[-1]["wall_s"] - train[0]["wall_s"])
    return {"step": final["step"], "minutes": final["wall_s"] / 60, "steps/s": rate,
            "wer": final["wer"], "per": final["per"], "tf_acc": final["token_accuracy"],
            "fr_acc": final["fr_token_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True, help="directory of the runs (and their data)")
    parser.add_argument("--steps", type=int, default=35_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    os.makedirs(args.root, exist_ok=True)
    load_before = common.load_average()
    # Prepare the data once, before two processes would race to build it.
    task_data.read_task_texts(g2p_gru.get_config(), task_data.default_data_dir(
        os.path.join(args.root, "any")), ("train",))
    for seed in args.seeds:
        train_side_by_side(args.root, seed, args.steps)

    print("\n".join(common.machine_lines(1, load_before)))
    print(f"- {args.steps} steps per run, batch 64; both arms of a seed side by side, one core each\n")
    print("| arm | seed | step | wall min | steps/s | validation WER % | PER % | TF token acc | "
          "FR token acc |")
    print("|---|---|---|---|---|---|---|---|---|")
    means = {}
    for arm in ARMS:
        rows = [summary(os.path.join(args.root, run_name(arm, seed))) for seed in args.seeds]
        for seed, r in zip(args.seeds, rows, strict=True):
            print(f"| {arm} | {seed} | {r['step']} | {r['minutes']:.1f} | {r['steps/s']:.2f} | "
                  f"{r['wer']:.2f} | {r['per']:.2f} | {r['tf_acc']:.4f} | {r['fr_acc']:.4f} |")
        means[arm] = {key: sum(r[key] for r in rows) / len(rows) for key in ("wer", "per", "steps/s")}
    print()
    for arm, mean in means.items():
        print(f"{arm}: mean WER {mean['wer']:.2f}%, PER {mean['per']:.2f}%, "
              f"{mean['steps/s']:.2f} steps/s")


if __name__ == "__main__":
    main()
