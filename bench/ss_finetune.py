"""Scheduled sampling as fine-tuning: a teacher-forced model continued N steps with teacher
forcing (the control) and with each scheduled-sampling recipe, two seeds per arm.

    python bench/ss_finetune.py --root runs/ss_ft [--task g2p|running_sum] [--steps N]
        [--seeds 0 1] [--arms tf position@0.9 step_argmax step_oracle]

1. Base: the task's teacher-forced recipe from scratch, one run per seed (G2P: the one-hour
   `configs/g2p_gru.py`, 70k steps; running_sum: `configs/running_sum_transformer.py`, 1000 steps
   at a constant learning rate, evaluated and checkpointed every 25).
2. Arms: every arm warm-starts from its seed's base (`config.init_from`: the parameters, a fresh
   optimizer, the same fine-tuning learning rate and N steps), so all arms of a seed count the same
   steps from scratch and differ only in what the decoder reads. G2P starts from the base's last
   checkpoint; running_sum from its first with 99% teacher-forced validation token accuracy
   (`--start_accuracy`), since its model learns in a sudden jump and a fixed step would find one
   seed before the jump and another after it. The arms:
   - `tf`: teacher forcing (extra steps alone);
   - `position@K`: gold with probability K ** t at decoder position t (Liu et al., EMNLP 2021);
   - `step_argmax`: gold with an inverse-sigmoid p(step), 1/2 at step N/2 and floored at 1/2
     there, else the argmax token;
   - `step_oracle`: the same schedule, the own token sampled at temperature 0.5 (the word oracle
     of Zhang et al., ACL 2019).
3. Scores on the evaluation split (G2P: validation, the test half is held back; running_sum:
   its held-out test split): WER / PER greedy and with beam 4, the final teacher-forced and
   free-running token accuracies, and the gap between them by output position.

Runs go one per core this process may use (two here), each pinned to its core with one XLA
thread. Running the script again
resumes unfinished runs and skips finished ones; SIGTERM or Ctrl-C reaches the trainers, which
save a checkpoint and stop.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402 - sets thread counts before jax starts

common.set_threads(1)  # inherited by the training processes: one XLA thread each

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from g2p_scheduled_sampling import final_record  # noqa: E402

from flax_s2s import decoding, reference_eval  # noqa: E402
from flax_s2s.data import pipeline, registry, task_data  # noqa: E402
from flax_s2s.data.vocab import PAD, split_symbols  # noqa: E402
from flax_s2s.logs import read_records  # noqa: E402
from flax_s2s.models import decoder_inputs  # noqa: E402
from flax_s2s.schedules import inverse_sigmoid_k  # noqa: E402
from flax_s2s.workdirs import load_workdir  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Task:
    config: str  # the base recipe, also the config of every arm
    base_steps: int
    steps: int  # default N of the arms
    learning_rate: float  # peak of the arms' fresh cosine schedule
    split: str  # where the final scores are taken
    base_every: int = 0  # the base's eval and checkpoint interval (0: a seventh of its steps)
    # The arms start from the base's first checkpoint whose teacher-forced validation token
    # accuracy reaches this (0: from its last checkpoint).
    start_accuracy: float = 0.0


TASKS = {
    "g2p": Task("configs/g2p_gru.py", 70_000, 7_000, 2e-4, "validation"),
    "running_sum": Task("configs/running_sum_transformer.py", 1_000, 150, 5e-4, "test",
                        base_every=25, start_accuracy=0.99),
}


def arm_overrides(arm: str, steps: int) -> list[str]:
    """The config overrides that make `arm` (see the module docstring)."""
    name, _, value = arm.partition("@")
    tf = "--config.teacher_forcing."
    if name == "tf":
        return []
    if name == "position":
        return [f"{tf}position_schedule=exponential", f"{tf}position_k={float(value)}"]
    if name in ("step_argmax", "step_oracle"):
        overrides = [f"{tf}schedule=inverse_sigmoid", f"{tf}k={inverse_sigmoid_k(steps / 2)}",
                     f"{tf}floor=0.5"]
        if name == "step_oracle":
            overrides += [f"{tf}choice=sample", f"{tf}temperature=0.5"]
        return overrides
    raise SystemExit(f"unknown arm {arm!r}: tf | position@K | step_argmax | step_oracle")


@dataclasses.dataclass(frozen=True)
class Job:
    workdir: str
    steps: int
    args: list[str]  # train.py arguments


def base_job(root: str, task: Task, seed: int) -> Job:
    every = task.base_every or task.base_steps // 7
    workdir = os.path.join(root, f"tf_{task.base_steps}_seed{seed}")
    return Job(workdir, task.base_steps, [
        f"--config={task.config}", f"--workdir={workdir}", f"--config.seed={seed}",
        f"--config.num_train_steps={task.base_steps}", f"--config.eval_every={every}",
        # With a start by accuracy every evaluated step is kept, so that any can be the start.
        *([f"--config.checkpoint_every={every}",
           f"--config.max_checkpoints={task.base_steps // every + 1}"] if task.start_accuracy
          else [f"--config.checkpoint_every={every // 2}"]),
    ])


def start_step(root: str, task: Task, seed: int) -> int:
    """The base checkpoint the arms of `seed` start from (see `Task.start_accuracy`)."""
    base = base_job(root, task, seed)
    if not task.start_accuracy:
        return base.steps
    records = read_records(os.path.join(base.workdir, "metrics.jsonl"))
    reached = [r["step"] for r in records if r["split"] == "validation"
               and r["token_accuracy"] >= task.start_accuracy and r["step"] < base.steps]
    if not reached:
        raise SystemExit(f"{base.workdir}: validation token accuracy never reached "
                         f"{task.start_accuracy} before step {base.steps}")
    return min(reached)


def arm_job(root: str, task: Task, arm: str, seed: int, steps: int) -> Job:
    every = max(steps // 5, 1)
    workdir = os.path.join(root, f"ft_{arm}_{steps}_seed{seed}")
    return Job(workdir, steps, [
        f"--config={task.config}", f"--workdir={workdir}", f"--config.seed={seed}",
        f"--config.init_from={base_job(root, task, seed).workdir}",
        f"--config.init_from_step={start_step(root, task, seed) if task.start_accuracy else -1}",
        f"--config.num_train_steps={steps}", f"--config.eval_every={every}",
        f"--config.checkpoint_every={every}", f"--config.log_every={max(every // 4, 1)}",
        f"--config.optimizer.learning_rate={task.learning_rate}",
        f"--config.optimizer.warmup_steps={max(steps // 20, 1)}",
        *arm_overrides(arm, steps),
    ])


def run_jobs(jobs: list[Job]) -> None:
    """Runs the unfinished jobs, as many at a time as this process has cores, each pinned to
    one; waits for all. SIGTERM or SIGINT to this process reaches the trainers."""
    pending = [job for job in jobs if final_record(job.workdir, job.steps) is None]
    free = sorted(os.sched_getaffinity(0))
    running: dict[int, tuple[subprocess.Popen, Job]] = {}

    def forward(signum, frame):
        for child, _ in running.values():
            child.send_signal(signum)
        pending.clear()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    failed = []
    try:
        while pending or running:
            while pending and free:
                job, core = pending.pop(0), free.pop(0)
                with open(job.workdir + ".log", "a") as log:  # the child keeps its own descriptor
                    running[core] = (subprocess.Popen(
                        # taskset, not a preexec_fn: this process already runs threads.
                        ["taskset", "-c", str(core), sys.executable,
                         os.path.join(ROOT, "train.py"), *job.args],
                        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                        # Their own session: a terminal Ctrl-C reaches them once, via `forward`.
                        start_new_session=True,
                    ), job)
            time.sleep(2)
            for core, (child, job) in list(running.items()):
                if child.poll() is not None:
                    del running[core]
                    free.append(core)
                    if child.returncode != 0 or final_record(job.workdir, job.steps) is None:
                        failed.append(f"{job.workdir} (exit {child.returncode})")
    finally:
        for child, _ in running.values():
            if child.poll() is None:  # this script failed: leave no trainer holding a core
                child.terminate()
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        raise SystemExit(f"did not finish: {', '.join(failed)}; see their .log files. "
                         "Run the same command again to resume them.")


def final_eval(job: Job, split: str) -> dict | None:
    """The run's last evaluation of `split` at its final step (text metrics included), or None."""
    path = os.path.join(job.workdir, "metrics.jsonl")
    records = read_records(path) if os.path.exists(path) else []
    finals = [r for r in records if r["split"] == split and r["step"] == job.steps and "wer" in r]
    return finals[-1] if finals else None


@dataclasses.dataclass(frozen=True)
class Scores:
    wer: float
    per: float
    correct: list[bool]  # per distinct source: the output equals one of its references


def scores(job: Job, split: str, beam: int) -> Scores:
    """WER / PER of the run's final model on `split`, and which sources it got right (for the
    paired comparison), decoded greedily (beam 0) or with beam search."""
    trained = load_workdir(job.workdir)
    config = trained.config
    data_dir = config.data_dir or task_data.default_data_dir(job.workdir)
    pairs = registry.read_task_texts(config, data_dir, (split,))[split]
    grouped = pipeline.group_pairs(pairs, trained.src_vocab, config.max_src_len,
                                   config.vocab.get("src_eos", False))
    decode = reference_eval.best_decoder(trained.model, trained.variables, config.max_tgt_len,
                                         beam, config.eval_length_alpha)
    tokens = reference_eval.decode_sources(decode, grouped.src, config.eval_batch_size)
    hypotheses = [trained.tgt_vocab.decode(row) for row in tokens]
    separator = trained.tgt_vocab.separator
    rates = reference_eval.score_texts(hypotheses, grouped.references, ("wer", "per"), separator)
    correct = [any(split_symbols(h, separator) == split_symbols(r, separator) for r in refs)
               for h, refs in zip(hypotheses, grouped.references, strict=True)]
    return Scores(rates["wer"], rates["per"], correct)


def paired_test(arm: list[bool], control: list[bool]) -> tuple[int, int, float]:
    """McNemar's exact test on the same sources: (arm right where the control is wrong, the
    reverse, two-sided p of a split at least that uneven if both were equally likely)."""
    wins = sum(a and not c for a, c in zip(arm, control, strict=True))
    losses = sum(c and not a for a, c in zip(arm, control, strict=True))
    n, k = wins + losses, min(wins, losses)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return wins, losses, p


def first_errors(job: Job, split: str) -> dict[str, float]:
    """Whether greedy decoding gets a target sequence right exactly when teacher forcing does.

    Up to its first error, greedy decoding reads the gold prefix, so it errs first where the
    teacher-forced argmax does, and a sequence is right under one exactly when it is under the
    other: exact match (and G2P's WER, one target at a time) cannot see what happens after the
    first error, which is all that exposure bias changes. Returns the share of examples (one
    target each, alternatives separately) right under both, under teacher forcing only, under
    greedy decoding only, and under neither (the middle two only from float rounding).
    """
    trained = load_workdir(job.workdir)
    config, model, variables = trained.config, trained.model, trained.variables
    examples = task_data.load_task_data(config, job.workdir, (split,)).splits[split]

    @jax.jit
    def right(src_tokens, tgt_tokens):
        encoded = model.encode(variables, src_tokens)
        forced = model.forward(variables, encoded, decoder_inputs(tgt_tokens)).argmax(-1)
        forced = jnp.where(tgt_tokens == PAD, PAD, forced)  # PAD after EOS, as decoding gives
        greedy = decoding.best_sequences(model, variables, src_tokens, tgt_tokens.shape[1])
        return (forced == tgt_tokens).all(-1), (greedy == tgt_tokens).all(-1)

    counts = np.zeros((2, 2))
    for batch in pipeline.eval_batches(examples, config.eval_batch_size):
        forced, greedy = jax.device_get(right(batch["src_tokens"], batch["tgt_tokens"]))
        real = batch["weights"] > 0
        np.add.at(counts, (forced[real].astype(int), greedy[real].astype(int)), 1)
    counts /= counts.sum()
    return {"both": counts[1, 1], "forced only": counts[1, 0], "greedy only": counts[0, 1],
            "neither": counts[0, 0]}


def gap_by_position(job: Job, split: str) -> list[float | None]:
    """Teacher-forced minus free-running token accuracy (points) by position, final eval."""
    final = final_eval(job, split)
    return [None if tf is None or fr is None else 100 * (tf - fr)
            for tf, fr in zip(final["tf_accuracy_by_position"], final["fr_accuracy_by_position"],
                              strict=True)]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def report(root: str, task: Task, arms: list[str], seeds: list[int], steps: int) -> None:
    split = task.split
    base = {seed: base_job(root, task, seed) for seed in seeds}
    runs = {(arm, seed): arm_job(root, task, arm, seed, steps) for arm in arms for seed in seeds}
    header = ["run", "seed", "steps from scratch", f"{split} WER %", "PER %", "beam 4 WER %",
              "beam 4 PER %", "TF token acc", "FR token acc"]
    rows, by_arm, correct = [], {}, {}
    for label, seed, job, total in (
        [("base (teacher forcing)", s, j, task.base_steps) for s, j in base.items()]
        + [(arm, s, j, start_step(root, task, s) + steps) for (arm, s), j in runs.items()]
    ):
        greedy, beam = scores(job, split, 0), scores(job, split, 4)
        final = final_eval(job, split)
        rows.append([label, seed, total, greedy.wer, greedy.per, beam.wer, beam.per,
                     final["token_accuracy"], final["fr_token_accuracy"]])
        by_arm.setdefault(label, []).append((greedy.wer, greedy.per, beam.wer, beam.per))
        correct[label, seed] = (greedy.correct, beam.correct)
    print("\n".join(common.table(header, rows)))

    print("\n| arm | mean WER % | mean PER % | beam 4 WER % | beam 4 PER % |")
    print("|---|---|---|---|---|")
    for label, values in by_arm.items():
        columns = [mean([v[i] for v in values]) for i in range(4)]
        print(f"| {label} | " + " | ".join(f"{c:.2f}" for c in columns) + " |")

    print(f"\nPaired against the tf control of the same seed, on the same {split} sources: "
          "sources the arm gets right and the control wrong / the reverse, and McNemar's exact "
          "two-sided p.\n")
    print("| arm | seed | greedy: arm only / control only | p | beam 4: arm only / control only | p |")
    print("|---|---|---|---|---|---|")
    for (arm, seed) in runs:
        if arm == "tf" or ("tf", seed) not in correct:
            continue
        cells = []
        for which in (0, 1):  # greedy, beam 4
            wins, losses, p = paired_test(correct[arm, seed][which], correct["tf", seed][which])
            cells += [f"{wins} / {losses}", f"{p:.2g}"]
        print(f"| {arm} | {seed} | " + " | ".join(cells) + " |")

    print("\nTeacher-forced minus free-running token accuracy by output position (points, "
          f"{split}, final eval, mean over seeds):\n")
    gaps = {"base (teacher forcing)": [gap_by_position(j, split) for j in base.values()]}
    for arm in arms:
        gaps[arm] = [gap_by_position(runs[arm, s], split) for s in seeds]
    length = len(next(iter(gaps.values()))[0])
    every = 1 if length <= 24 else 5  # long outputs: every fifth position
    shown = [t for t in range(0, length, every)
             if all(g[t] is not None for v in gaps.values() for g in v)]
    print("| run | " + " | ".join(f"t={t}" for t in shown) + " |")
    print("|---|" + "---|" * len(shown))
    for label, values in gaps.items():
        print(f"| {label} | " + " | ".join(f"{mean([g[t] for g in values]):.1f}" for t in shown)
              + " |")

    print(f"\nSequences ({split} examples, one target each) right under teacher forcing (argmax at "
          "every position, reading the gold prefix) and under greedy decoding:\n")
    print("| run | seed | both | teacher forced only | greedy only | neither |")
    print("|---|---|---|---|---|---|")
    for label, seed, job in ([("base (teacher forcing)", s, j) for s, j in base.items()]
                             + [(arm, s, j) for (arm, s), j in runs.items()]):
        shares = first_errors(job, split)
        print(f"| {label} | {seed} | " + " | ".join(f"{100 * v:.2f}%" for v in shares.values())
              + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="directory of the runs (and their data)")
    parser.add_argument("--task", choices=sorted(TASKS), default="g2p")
    parser.add_argument("--steps", type=int, default=0, help="N, fine-tuning steps (0: the task's)")
    parser.add_argument("--base_steps", type=int, default=0, help="base run length (0: the task's)")
    parser.add_argument("--start_accuracy", type=float, default=None,
                        help="the arms start at the base's first checkpoint with this teacher-forced "
                             "validation token accuracy (default: the task's; 0: its last)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--arms", nargs="+", default=["tf", "position@0.9", "step_argmax",
                                                      "step_oracle"])
    parser.add_argument("--report_only", action="store_true", help="train nothing, print tables")
    args = parser.parse_args()
    task = TASKS[args.task]
    if args.base_steps:
        task = dataclasses.replace(task, base_steps=args.base_steps)
    if args.start_accuracy is not None:
        task = dataclasses.replace(task, start_accuracy=args.start_accuracy)
    steps = args.steps or task.steps
    os.makedirs(args.root, exist_ok=True)
    for arm in args.arms:
        arm_overrides(arm, steps)  # an unknown arm fails before anything runs
    load_before = common.load_average()
    if not args.report_only:
        # Prepare the data once, before two trainers would race to build it.
        config = importlib.import_module(task.config.removesuffix(".py").replace("/", ".")).get_config()
        registry.read_task_texts(config, task_data.default_data_dir(os.path.join(args.root, "any")),
                                  ("train",))
        run_jobs([base_job(args.root, task, seed) for seed in args.seeds])
        run_jobs([arm_job(args.root, task, arm, seed, steps)
                  for seed in args.seeds for arm in args.arms])
    print("\n".join(common.machine_lines(1, load_before)))
    start = (f"its first checkpoint at {task.start_accuracy:.0%} teacher-forced validation token "
             "accuracy" if task.start_accuracy else "its last checkpoint")
    print(f"- task {args.task}: base {task.config}, {task.base_steps} steps; arms warm-started "
          f"from {start}, {steps} steps each, peak learning rate {task.learning_rate}, "
          f"{len(os.sched_getaffinity(0))} at a time with one core and one XLA thread each\n")
    report(args.root, task, args.arms, args.seeds, steps)


if __name__ == "__main__":
    main()
