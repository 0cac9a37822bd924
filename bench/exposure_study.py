"""Exposure bias, measured: does any remedy beat more teacher-forced steps on a shifted test set?

    python bench/exposure_study.py [--root runs/exposure_study_v2] [--tasks numbers g2p]
        [--stage data base gonogo arms table] [--seeds 0 1 2 3 4] [--arms tf step ...]

Tasks. `numbers`: digits -> English number words (num2words, British: "forty thousand and
five"), character level, built in code by `bench/exposure_data.py`: in-distribution train /
validation / test, and two shifted tests of new combinations of seen words: `test_pattern`
(30_000 .. 99_999 with hundreds digit 0, "forty-five thousand and eighty": held out of every
other split, which show that zero group below 30_000 and those thousands groups without it) and
`test_magnitude` (numbers 1 .. 999, 2% of training, the rest 1_000 .. 99_999). `g2p`: CMUdict
G2P trained on the standard training split as `configs/g2p_gru.py` does (the lexicon read from
--g2p_data, never copied); its test is the validation words of 10+ letters (`validation_long`),
the full validation split beside it.

Stages, each resumable (every (task, seed, arm) is its own workdir, `ROOT/TASK/seedS/ARM`, and
each evaluation is cached in its workdir's `study_eval.json`; rerunning skips what is done and
resumes an interrupted trainer from its checkpoint):
- data: writes the number task's files under `ROOT/data/numbers`.
- base: the teacher-forced model per seed (`base`), trained at a constant learning rate.
- gonogo: the base's free-running errors after an earlier error against after none
  (`diagnostics.error_after_error`, aligned by edit distance), and its recovery curve.
- arms: every arm warm-starts from its seed's base (`config.init_from`: its parameters, a fresh
  optimizer) for the same N steps, the same seed, hence the same data order: paired.
    tf            teacher forcing continued (the "more steps" control)
    step          inverse-sigmoid p(step), 1/2 at step N/2, floored there, argmax own tokens
                  (`bench/ss_finetune.py`'s step_argmax)
    position@K    gold with probability K ** t at decoder input t, own tokens sampled (T = 1)
    noise@K       teacher forcing with decoder-input noise at the rate position@K reads own
                  tokens (`noise_rate`: 1 - the token-weighted mean of K ** t over the train
                  targets, the rate `gold_rate_by_position` logs; checked against the logs)
    oracle@K      position@K with oracle targets (the next reference token after the
                  reference prefix aligned to the sampled prefix by edit distance)
    mrt           minimum risk training: 4 sampled candidates, cost edit distance, alpha 1,
                  mixed with the token loss at weight 0.5 (`config.mrt`; skipped where the
                  config has no such block)
- table: greedy and beam-5 scores of every run, paired differences against tf, recovery curves,
  errors after errors; printed and written to `ROOT/table.md`.

Primary metric, fixed before any arm ran: sequence error (percent of test sources whose output
matches none of their references) on the shifted tests, `test_pattern` and `test_magnitude` for
numbers, `validation_long` for G2P; greedy decoding first, beam 5 beside it. Paired differences
arm - tf, pooled over seeds, with a two-level bootstrap 95% interval: each replicate resamples
the seeds and, shared by all seeds (which are scored on the same examples), the test examples,
both with replacement (`paired_bootstrap`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import os
import sys
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402 - sets thread counts before jax starts

common.set_threads(1)

import ml_collections  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import exposure_data  # noqa: E402
import exposure_eval  # noqa: E402
from ss_finetune import Job, arm_overrides, run_jobs  # noqa: E402

from configs import default, g2p_gru  # noqa: E402
from flax_s2s.data import registry, task_data  # noqa: E402
from flax_s2s.data.vocab import split_symbols  # noqa: E402
from flax_s2s.logs import read_records  # noqa: E402

ARMS = ("tf", "step", "position@0.99", "position@0.97", "noise@0.97", "oracle@0.97", "mrt")
STAGES = ("data", "base", "gonogo", "arms", "table")
MRT = {"weight": 0.5, "num_candidates": 4, "alpha": 1.0, "cost": "edit", "candidates": "sample"}


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    base_args: tuple[str, ...]  # train.py config arguments of the base and every arm
    base_steps: int
    steps: int  # N, the extra steps of every arm
    learning_rate: float  # the arms' peak (fresh cosine schedule)
    primary: tuple[str, ...]  # the shifted tests
    seeds: tuple[int, ...]
    config: Callable[[], ml_collections.ConfigDict]  # what the data readers need of base_args


def numbers_task(root: str) -> Task:
    data = os.path.abspath(os.path.join(root, "data", "numbers"))
    c = "--config."

    def config() -> ml_collections.ConfigDict:
        config = default.get_config()
        config.task, config.data_path = "parallel_text", data
        return config

    return Task("numbers", (
        f"--config={ROOT}/configs/default.py", f"{c}task=parallel_text", f"{c}data_path={data}",
        f"{c}max_src_len=8", f"{c}max_tgt_len=74", f"{c}model.emb_dim=32",
        f"{c}model.hidden_dim=64", f"{c}model.attention_dim=64", f"{c}batch_size=64",
        f"{c}eval_batch_size=500", f"{c}text_metrics=('wer',)", f"{c}final_eval_split=validation",
        f"{c}optimizer.learning_rate=3e-3", f"{c}optimizer.warmup_steps=100",
        f"{c}optimizer.end_lr_factor=1.0",
    ), base_steps=200, steps=100, learning_rate=1e-3,
        primary=("test_pattern", "test_magnitude"), seeds=(0, 1, 2, 3, 4), config=config)


def g2p_task(root: str, g2p_data: str) -> Task:
    data_dir = os.path.abspath(os.path.join(root, "g2p", "tfds"))

    def config() -> ml_collections.ConfigDict:
        config = g2p_gru.get_config()
        config.data_path, config.data_dir = g2p_data, data_dir
        return config

    return Task("g2p", (f"--config={ROOT}/configs/g2p_gru.py", f"--config.data_path={g2p_data}",
                        f"--config.data_dir={data_dir}"),
                base_steps=70_000, steps=7_000, learning_rate=2e-4,
                primary=("validation_long",), seeds=(0, 1, 2), config=config)


def base_job(root: str, task: Task, seed: int) -> Job:
    workdir = os.path.join(root, task.name, f"seed{seed}", "base")
    every = max(task.base_steps // 2, 1)
    # A checkpoint every tenth of the run: a stopped base (hours on G2P) loses little. Saving
    # draws nothing from the data or the keys, so the trained weights do not depend on it.
    return Job(workdir, task.base_steps, [
        *task.base_args, f"--workdir={workdir}", f"--config.seed={seed}",
        f"--config.num_train_steps={task.base_steps}", f"--config.eval_every={every}",
        f"--config.checkpoint_every={max(task.base_steps // 10, 1)}",
        f"--config.log_every={max(every // 2, 1)}",
    ])


def has_mrt() -> bool:
    return "mrt" in default.get_config()


def noise_rate(root: str, task: Task, k: float) -> float:
    """1 - the share of decoder inputs past BOS that position@k reads gold: sum over the train
    targets of (1 - k ** t) for inputs t = 1 .. len (EOS counted in len), over their number."""
    pairs = train_pairs(root, task)
    separator = "" if task.name == "numbers" else " "
    own = total = 0.0
    for _, target in pairs:
        inputs = len(split_symbols(target, separator))  # y_1 .. y_n read at t = 1 .. n
        own += sum(1 - k**t for t in range(1, inputs + 1))
        total += inputs
    return own / total


def train_pairs(root: str, task: Task) -> list[tuple[str, str]]:
    config = task.config()
    data_dir = config.data_dir or task_data.default_data_dir(os.path.join(root, task.name, "any"))
    return registry.read_task_texts(config, data_dir, ("train",))["train"]


def arm_args(root: str, task: Task, arm: str) -> list[str] | None:
    """train.py overrides of `arm` (module docstring), or None where this code lacks them."""
    name, _, value = arm.partition("@")
    tf = "--config.teacher_forcing."
    sampled = [f"{tf}choice=sample", f"{tf}temperature=1.0"]
    if name in ("tf", "position"):
        return arm_overrides(arm, task.steps) + (sampled if name == "position" else [])
    if name == "step":
        return arm_overrides("step_argmax", task.steps)
    if name == "noise":
        return [f"{tf}input_noise={noise_rate(root, task, float(value)):.6f}"]
    if name == "oracle":
        return arm_args(root, task, f"position@{value}") + [f"{tf}oracle_targets=True"]
    if name == "mrt":
        if not has_mrt():
            return None
        return [f"--config.mrt.{key}={value}" for key, value in MRT.items()]
    raise SystemExit(f"unknown arm {arm!r}: one of {list(ARMS)} (any K for position, noise, "
                     "oracle)")


def arm_job(root: str, task: Task, arm: str, seed: int) -> Job | None:
    overrides = arm_args(root, task, arm)
    if overrides is None:
        return None
    workdir = os.path.join(root, task.name, f"seed{seed}", arm)
    every = max(task.steps // 3, 1)
    return Job(workdir, task.steps, [
        *task.base_args, f"--workdir={workdir}", f"--config.seed={seed}",
        f"--config.init_from={base_job(root, task, seed).workdir}", "--config.init_from_step=-1",
        f"--config.num_train_steps={task.steps}", f"--config.eval_every={task.steps}",
        f"--config.checkpoint_every={every}", f"--config.log_every={max(every // 2, 1)}",
        f"--config.optimizer.learning_rate={task.learning_rate}",
        f"--config.optimizer.warmup_steps={max(task.steps // 20, 1)}",
        "--config.optimizer.end_lr_factor=0.0", *overrides,
    ])


def logged_own_rate(root: str, task: Task, k: float, seeds: list[int]) -> float | None:
    """1 - the gold rate position@k's runs logged (`gold_rate_by_position`, means of their train
    records), weighted by the train targets' inputs per position t >= 1; None before any ran."""
    separator = "" if task.name == "numbers" else " "
    lengths = [len(split_symbols(t, separator)) for _, t in train_pairs(root, task)]
    rates = []
    for seed in seeds:
        path = os.path.join(root, task.name, f"seed{seed}", f"position@{k}", "metrics.jsonl")
        records = [r for r in (read_records(path) if os.path.exists(path) else [])
                   if r.get("gold_rate_by_position")]
        for record in records:
            gold = record["gold_rate_by_position"]
            counts = [sum(n >= t for n in lengths) for t in range(1, len(gold))]
            own = sum((1 - (g or 0.0)) * c for g, c in zip(gold[1:], counts, strict=True))
            rates.append(own / sum(counts))
    return sum(rates) / len(rates) if rates else None


def notes(root: str, task: Task, arms: list[str]) -> list[str]:
    lines = [f"- base: {task.base_steps} teacher-forced steps; every arm {task.steps} more from "
             f"it (fresh AdamW, peak {task.learning_rate}, cosine to 0); primary: sequence error "
             f"on {', '.join(task.primary)}"]
    for arm in arms:
        name, _, value = arm.partition("@")
        if name == "noise":
            logged = logged_own_rate(root, task, float(value), list(task.seeds))
            lines.append(f"- {arm}: input_noise {noise_rate(root, task, float(value)):.4f} "
                         "(from the data); position@{} logged {}".format(
                             value, "nothing yet" if logged is None else f"{logged:.4f}"))
    if "mrt" in arms and not has_mrt():
        lines.append("- mrt: not run, this code has no config.mrt block")
    return lines


def stage_data(root: str, tasks: list[Task]) -> None:
    if any(task.name == "numbers" for task in tasks):
        num2words = importlib.import_module("num2words").num2words  # the bench extra
        directory = os.path.join(root, "data", "numbers")
        if not os.path.exists(os.path.join(directory, exposure_data.SPLITS[-1] + ".tsv")):
            counts = exposure_data.write_splits(directory, num2words)
            print(f"numbers: wrote {counts} to {directory}")
    for task in tasks:  # prepared once, before a trainer would build it
        train_pairs(root, task)


def stage_gonogo(root: str, task: Task, seeds: list[int]) -> None:
    for seed in seeds:
        job = base_job(root, task, seed)
        if not exposure_eval.finished(job):
            print(f"{job.workdir}: not trained yet, skipped")
            continue
        result = exposure_eval.evaluate_run(job, task.name)
        if exposure_eval.error_after_error_function() is None:
            print(f"{task.name} seed {seed} base: error_after_error skipped, this code has no "
                  "diagnostics.error_after_error (rerun --stage gonogo once it has)")
        curve = result["recovery"]
        gaps = [f"{100 * (c - k):+.1f}" for c, k in zip(curve["corrupted"][1:6], curve["clean"][1:6],
                                                        strict=True) if c is not None]
        print(f"{task.name} seed {seed} base: recovery, corrupted - clean accuracy at d = 1..5: "
              + ", ".join(gaps))
        for split, found in result["error_after_error"].items():
            print(f"{task.name} seed {seed} base, {split}: {exposure_eval.describe_eae(found)}")


def run(jobs: list[Job]) -> None:
    """`ss_finetune.run_jobs` (one trainer per core this process may use), parents made first."""
    for job in jobs:
        os.makedirs(os.path.dirname(job.workdir), exist_ok=True)
    run_jobs(jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="runs/exposure_study_v2")  # v2 data: a new root
    parser.add_argument("--tasks", nargs="+", choices=("numbers", "g2p"), default=["numbers"])
    parser.add_argument("--stage", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--seeds", type=int, nargs="+", help="default: the task's (5 / 3)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--base_steps", type=int, default=0, help="0: the task's")
    parser.add_argument("--steps", type=int, default=0, help="N, arm steps (0: the task's)")
    parser.add_argument("--g2p_data", default="../shared/data/g2p/g014b2b.train",
                        help="the CMUdict training split (relative to the repository root)")
    args = parser.parse_args()
    load_before = common.load_average()
    os.makedirs(args.root, exist_ok=True)
    tasks = []
    for name in args.tasks:
        task = numbers_task(args.root) if name == "numbers" else g2p_task(args.root, args.g2p_data)
        task = dataclasses.replace(task, base_steps=args.base_steps or task.base_steps,
                                   steps=args.steps or task.steps)
        tasks.append(task)
    if "mrt" in args.arms and not has_mrt():
        print("arm mrt skipped: this code has no config.mrt block (minimum risk training)")
    if "data" in args.stage:
        stage_data(args.root, tasks)
    for task in tasks:
        seeds = args.seeds or list(task.seeds)
        if "base" in args.stage:
            run([base_job(args.root, task, seed) for seed in seeds])
        if "gonogo" in args.stage:
            stage_gonogo(args.root, task, seeds)
        if "arms" in args.stage:
            jobs = [arm_job(args.root, task, arm, seed) for seed in seeds for arm in args.arms]
            run([job for job in jobs if job is not None])
        if "table" in args.stage:
            lines = exposure_eval.table(
                task, seeds, args.arms, functools.partial(arm_job, args.root, task),
                functools.partial(base_job, args.root, task), notes(args.root, task, args.arms))
            header = common.machine_lines(1, load_before)
            text = "\n".join([f"## {task.name}", "", *header, "", *lines]) + "\n"
            print(text)
            with open(os.path.join(args.root, f"table_{task.name}.md"), "w") as f:
                f.write(text)


if __name__ == "__main__":
    main()
