"""How far to unroll the RNN's scans over time: the train step at one sequence length after another,
with every scan (both encoder directions and the teacher-forced decoder) unrolled 8 steps per
loop iteration (the earlier fixed setting), rolled (1), or fully, against `unroll.scan_unroll`.

    python bench/scan_unroll.py [--threads N] [--lengths 8 12 16 24 32]

Two models: the one-hour G2P recipe (`configs/g2p_gru.py`: BiGRU 192, batch 64) and the default
LSTM (`configs/default.py`: 128 hidden, batch 128). Inputs are random tokens at [batch, length] for
source and target alike (the cost does not depend on their values), so nothing needs a dataset.
Each step is compiled ahead of time (its compile seconds are reported) and timed in alternating
windows against the other settings at the same length.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SETTINGS = ("8", "1", "full")  # steps per loop iteration; "full": the scan's length


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="XLA threads (default: every core, as training runs)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 12, 16, 24, 32])
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    common.set_threads(args.threads)  # before jax is imported, below
    import jax
    import numpy as np

    from configs import default, g2p_gru
    from flax_s2s import training
    from flax_s2s.models import build_model, unroll

    load_before = common.load_average()
    shipped_rule = unroll.scan_unroll
    rules = {"8": lambda length: 8, "1": lambda length: 1, "full": lambda length: length}
    models = {"g2p_gru (BiGRU 192, batch 64)": g2p_gru.get_config(),
              "default (LSTM 128, batch 128)": default.get_config()}
    vocab = 48
    rows = []
    for label, config in models.items():
        model = build_model(config, vocab, vocab)
        tx = training.make_optimizer(config)
        rng = np.random.default_rng(0)
        for length in args.lengths:
            batch = {key: rng.integers(4, vocab, (config.batch_size, length)).astype(np.int32)
                     for key in ("src_tokens", "tgt_tokens")}
            state = training.create_train_state(model, tx, config.seed, batch)
            compiled, compile_s = {}, {}
            for setting in SETTINGS:
                # Both the encoder and the decoder read `unroll.scan_unroll` when the step is traced.
                # A new step function each time: jit would reuse the first trace of one function.
                unroll.scan_unroll = rules[setting]
                step = jax.jit(training.make_train_step(model, tx, config))
                start = time.perf_counter()
                compiled[setting] = step.lower(state, batch).compile()
                compile_s[setting] = time.perf_counter() - start
            unroll.scan_unroll = shipped_rule
            sides = {s: (lambda fn=compiled[s], state=state, batch=batch:
                         jax.block_until_ready(fn(state, batch))) for s in SETTINGS}
            seconds = common.compare(sides, warmup=2, windows=5, repeats=3)
            picked = shipped_rule(length)
            picked_setting = "full" if picked == length else str(picked)
            rows.append([label, length, *[1000 * seconds[s] for s in SETTINGS],
                         *[compile_s[s] for s in SETTINGS], picked_setting,
                         f"{seconds['8'] / seconds[picked_setting]:.2f}x"])
            print(f"done: {label} at {length}", file=sys.stderr, flush=True)

    print("\n".join(common.machine_lines(args.threads, load_before)))
    print(f"- unroll.FULL_UNROLL_MAX = {unroll.FULL_UNROLL_MAX}; median of 5 alternating windows of 3 "
          "steps; source and target both at the length\n")
    header = ["model", "length", *[f"unroll {s} ms" for s in SETTINGS],
              *[f"compile {s} s" for s in SETTINGS], "scan_unroll picks", "vs unroll 8"]
    print("\n".join(common.table(header, rows)))


if __name__ == "__main__":
    main()
