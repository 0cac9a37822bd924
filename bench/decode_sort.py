"""Decode CLI: batches of similar source length (the default) against batches in input order.

    taskset -c 0 python bench/decode_sort.py --workdir runs/reverse [--lines 10000] [--beam 4]
        [--batch_size 64] [--windows 3] [--write] [--save_input FILE]

Writes a file of `--lines` random sources of mixed lengths (1 to the model's max_src_len symbols
of its source vocabulary, uniform, seed 0), decodes it the way `python -m flax_s2s.cli.decode` does
(`infer.decode_hypotheses`) with sorted and with unsorted batches, alternately after one warm-up
each, and prints the median seconds and the ratio; checks both give the same outputs. `--write`
appends the section to RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402 - sets thread counts before jax starts

common.set_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

from flax_s2s import infer  # noqa: E402
from flax_s2s.data.vocab import SPECIALS  # noqa: E402
from flax_s2s.workdirs import load_workdir  # noqa: E402


def mixed_lines(symbols: list[str], max_len: int, count: int, separator: str) -> list[str]:
    """`count` sources of 1..max_len symbols drawn uniformly (seed 0)."""
    rng = np.random.default_rng(0)
    return [separator.join(rng.choice(symbols, rng.integers(1, max_len + 1)))
            for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--save_input", help="Also write the sources to this file, for the CLI.")
    args = parser.parse_args()
    logging.set_verbosity(logging.WARNING)
    load_before = common.load_average()
    trained = load_workdir(args.workdir)
    vocab = trained.src_vocab
    symbols = vocab.symbols[len(SPECIALS):]  # a symbol vocabulary's own symbols
    lines = mixed_lines(symbols, trained.config.max_src_len, args.lines, vocab.separator)
    if args.save_input:
        with open(args.save_input, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    outputs = {}

    def side(sort: bool):
        def run():
            outputs[sort] = infer.decode_hypotheses(trained, lines, args.beam, 1,
                                                    trained.config.eval_length_alpha,
                                                    batch_size=args.batch_size, sort=sort)
        return run

    seconds = common.compare({"sorted": side(True), "input order": side(False)}, warmup=1,
                             windows=args.windows, repeats=1)
    same = [h[0].tokens for h in outputs[True]] == [h[0].tokens for h in outputs[False]]
    ratio = seconds["input order"] / seconds["sorted"]
    rows = [[name, f"{value:.2f}", f"{args.lines / value:.0f}"] for name, value in seconds.items()]
    lines_out = [
        *common.machine_lines(1, load_before),
        f"- Model: task {trained.config.task} ({trained.config.model.type}, step {trained.step}), "
        f"max_src_len {trained.config.max_src_len}, max_tgt_len {trained.config.max_tgt_len}; "
        f"{args.lines} sources of 1..{trained.config.max_src_len} symbols, beam {args.beam}, "
        f"batch {args.batch_size}",
        "",
        *common.table(["batches", "seconds (median)", "lines/s"], rows),
        "",
        f"Sorted batches are {ratio:.2f}x as fast; identical outputs: {same}.",
    ]
    print("\n".join(lines_out))
    if args.write:
        common.append_section("Decode CLI: length-sorted batches (`bench/decode_sort.py`)",
                              lines_out)


if __name__ == "__main__":
    main()
