"""Exposure bias under teacher-forcing schedules, on one task, seed and number of steps.

Trains `configs/addition_lstm_ss.py` once per schedule (p = 1, each decaying schedule, p = 0) and
prints a markdown table: final teacher-forced loss and token accuracy, free-running (greedy) exact
match and token accuracy, the largest per-position gap between teacher-forced and free-running
accuracy, and wall time. The decaying schedules are scaled to the run so that p(step) = 1/2 near
its middle step.

    python bench/exposure_bias.py --workdir /tmp/exposure_bias --steps 1500 --hidden_dim 64

Each run's metrics.jsonl stays in `<workdir>/<name>/`; the table is also written to
`<workdir>/table.md`, the raw results to `<workdir>/results.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `configs` lives at the repository root

from configs import addition_lstm_ss  # noqa: E402
from flax_s2s import training  # noqa: E402
from flax_s2s.schedules import inverse_sigmoid_k  # noqa: E402


def schedules(num_steps: int) -> dict[str, dict]:
    """teacher_forcing overrides per run; decaying ones reach p = 1/2 near num_steps / 2."""
    half = num_steps / 2
    k = inverse_sigmoid_k(half)
    return {
        "teacher forcing (p=1)": {"schedule": "constant", "p": 1.0},
        "linear": {"schedule": "linear", "k": 1.0, "slope": 1.0 / num_steps},
        "exponential": {"schedule": "exponential", "k": 0.5 ** (1.0 / half)},
        "inverse_sigmoid": {"schedule": "inverse_sigmoid", "k": k},
        "free running (p=0)": {"schedule": "constant", "p": 0.0},
    }


def largest_gap(result: dict) -> tuple[float, int]:
    """max over positions of teacher-forced minus free-running accuracy, and its position."""
    gaps = [
        (tf - fr, position)
        for position, (tf, fr) in enumerate(
            zip(result["tf_accuracy_by_position"], result["fr_accuracy_by_position"], strict=True)
        )
        if tf is not None
    ]
    return max(gaps)


def run_one(name: str, overrides: dict, args: argparse.Namespace) -> dict:
    config = addition_lstm_ss.get_config()
    config.teacher_forcing.update(overrides)
    config.num_train_steps = args.steps
    config.model.hidden_dim = args.hidden_dim
    config.model.attention_dim = args.hidden_dim
    config.optimizer.learning_rate = args.learning_rate
    config.seed = args.seed
    config.log_every = max(args.steps // 10, 1)
    config.eval_every = args.steps  # evaluate at the end only: the table reads the final numbers
    config.checkpoint_every = args.steps
    config.data_dir = os.path.join(args.workdir, "tfds")
    workdir = os.path.join(args.workdir, name.split(" ")[0].replace("(", ""))
    shutil.rmtree(workdir, ignore_errors=True)  # the same steps from scratch, never a resume
    print(f"== {name}: {dict(config.teacher_forcing)}", flush=True)
    summary = training.run(config, workdir)
    return {"name": name, "teacher_forcing": dict(config.teacher_forcing), **summary}


def table(results: list[dict], split: str) -> str:
    rows = [
        "| run | final p | TF loss | TF token acc | FR exact match | FR token acc "
        "| largest TF-FR gap (position) | wall time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["final"][split]
        gap, position = largest_gap(m)
        rows.append(
            f"| {r['name']} | {m['teacher_forcing_prob']:.3f} | {m['loss']:.4f} "
            f"| {m['token_accuracy']:.4f} | {m['exact_match']:.4f} | {m['fr_token_accuracy']:.4f} "
            f"| {gap:+.4f} ({position}) | {r['wall_time_s']:.0f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--hidden_dim", type=int, default=256)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="run names to keep (default: all)")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    results = []
    for name, overrides in schedules(args.steps).items():
        if args.only and not any(o in name for o in args.only):
            continue
        results.append(run_one(name, overrides, args))
        with open(os.path.join(args.workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    text = table(results, "test")
    with open(os.path.join(args.workdir, "table.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
