"""Wall time of one training-time evaluation of a split, text metrics included.

    taskset -c 0 python bench/eval_time.py --workdir runs/g2p [--split validation] [--repeats 3]

Loads the workdir's model, evaluates the split once to compile, then times `--repeats` more
evaluations the way `training.run` does them (`training.evaluate` with the config's text metrics)
and prints the median, with the machine beside it. One decode of each unique source serves the
free-running metrics and the text metrics.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402 - sets thread counts before jax starts

common.set_threads(1)  # one XLA thread; pin the process to one core with taskset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402

from flax_s2s import training  # noqa: E402
from flax_s2s.data import pipeline  # noqa: E402
from flax_s2s.data.task_data import load_task_data  # noqa: E402
from flax_s2s.workdirs import load_workdir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load_before = common.load_average()
    trained = load_workdir(args.workdir)
    config = trained.config
    examples = load_task_data(config, args.workdir, (args.split,)).splits[args.split]
    grouped = pipeline.group_references(examples)
    evaluator = training.make_evaluator(trained.model, config)

    def once() -> float:
        start = time.perf_counter()
        result = training.evaluate(evaluator, trained.variables, examples, config.eval_batch_size,
                                   config.text_metrics, trained.tgt_vocab, grouped)
        jax.block_until_ready(result)
        return time.perf_counter() - start

    compile_and_run = once()
    times = [once() for _ in range(args.repeats)]
    print("\n".join(common.machine_lines(1, load_before)))
    print(f"- {args.workdir}: {args.split}, {len(examples)} examples, {len(grouped)} unique sources, "
          f"eval_batch_size {config.eval_batch_size}, beam {config.eval_beam_size}, "
          f"text metrics {tuple(config.text_metrics)}\n")
    print("| | seconds |\n|---|---|")
    print(f"| first eval (compiles) | {compile_and_run:.1f} |")
    print(f"| eval, median of {args.repeats} | {statistics.median(times):.1f} |")


if __name__ == "__main__":
    main()
