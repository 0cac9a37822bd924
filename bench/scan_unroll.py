"""How far to unroll the RNN's scans over time: the train step at one sequence length after another,
with every scan (both encoder directions and the teacher-forced decoder) unrolled 8 steps per
loop iteration (the earlier fixed setting), rolled (1), or fully, against `unroll.scan_unroll`.

    python bench/scan_unroll.py [--threads N] [--lengths 8 12 16 24 32] [--models ...]

Models (`--models`): the one-hour G2P recipe (`configs/g2p_gru.py`: BiGRU 192, batch 64), the
default LSTM (`configs/default.py`: 128 hidden, batch 128) and, on request, the G2P Transformer
under scheduled sampling (`g2p_transformer_ss`, exact mode, p = 1/2; its step-by-step scan is the
one the rule sets for a Transformer). Inputs are random tokens at [batch, length] for source and
target alike (the cost does not depend on their values), so nothing needs a dataset. Each step is
compiled ahead of time (its compile seconds are reported) and timed in alternating windows
against the other settings at the same length.
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


MODELS = ("g2p_gru", "default", "g2p_transformer_ss")


def model_config(name: str):
    """The config of a benchmarked model: two RNNs trained teacher-forced, and a Transformer under
    scheduled sampling (its step-by-step scan is the one the rule sets; slow to compile)."""
    from configs import default, g2p_gru, g2p_transformer

    if name == "g2p_transformer_ss":
        config = g2p_transformer.get_config()
        config.teacher_forcing.update(schedule="constant", p=0.5, mode="exact")
        return config
    return {"g2p_gru": g2p_gru, "default": default}[name].get_config()


def describe(config) -> str:
    m = config.model
    if m.type == "transformer":
        size = f"Transformer d{m.d_model} {m.num_encoder_layers}+{m.num_decoder_layers}"
    else:
        size = f"{'Bi' if m.bidirectional else ''}{m.cell.upper()} {m.hidden_dim}"
    forcing = "" if config.teacher_forcing.p == 1.0 else ", scheduled sampling"
    return f"{size}, batch {config.batch_size}{forcing}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="XLA threads (default: every core, as training runs)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 12, 16, 24, 32])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["g2p_gru", "default"])
    parser.add_argument("--vocab", type=int, default=48, help="source and target vocabulary size")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    common.set_threads(args.threads)  # before jax is imported, below
    import jax
    import numpy as np

    from flax_s2s import training
    from flax_s2s.models import build_model, unroll

    load_before = common.load_average()
    shipped_rule = unroll.scan_unroll
    rules = {"8": lambda length: 8, "1": lambda length: 1, "full": lambda length: length}
    rows = []
    for name in args.models:
        config = model_config(name)
        model = build_model(config, args.vocab, args.vocab)
        tx = training.make_optimizer(config)
        rng = np.random.default_rng(0)
        for length in args.lengths:
            batch = {key: rng.integers(4, args.vocab, (config.batch_size, length)).astype(np.int32)
                     for key in ("src_tokens", "tgt_tokens")}
            state = training.create_train_state(model, tx, config.seed, batch)
            compiled, compile_s = {}, {}
            try:
                # "1" twice: the first compile of a shape pays one-time costs; it is not counted.
                for setting in ("1", *SETTINGS):
                    # Every scan over time reads `unroll.scan_unroll` when the step is traced.
                    # A new step function each time: jit would reuse the first trace of one function.
                    unroll.scan_unroll = rules[setting]
                    step = jax.jit(training.make_train_step(model, tx, config))
                    start = time.perf_counter()
                    compiled[setting] = step.lower(state, batch).compile()
                    compile_s[setting] = time.perf_counter() - start
            finally:
                unroll.scan_unroll = shipped_rule
            sides = {s: (lambda fn=compiled[s], state=state, batch=batch:
                         jax.block_until_ready(fn(state, batch))) for s in SETTINGS}
            seconds = common.compare(sides, warmup=2, windows=5, repeats=3)
            picked = {1: "1", 8: "8", length: "full"}[shipped_rule(length)]
            rows.append([f"{name} ({describe(config)})", length,
                         *[1000 * seconds[s] for s in SETTINGS],
                         *[compile_s[s] for s in SETTINGS], picked,
                         f"{seconds['8'] / seconds[picked]:.2f}x"])
            print(f"done: {name} at {length}", file=sys.stderr, flush=True)

    print("\n".join(common.machine_lines(args.threads, load_before)))
    print(f"- unroll.FULL_UNROLL_MAX = {unroll.FULL_UNROLL_MAX}; median of 5 alternating windows "
          "of 3 steps; source and target both at the length; random tokens\n")
    header = ["model", "length", *[f"unroll {s} ms" for s in SETTINGS],
              *[f"compile {s} s" for s in SETTINGS], "scan_unroll picks", "vs unroll 8"]
    print("\n".join(common.table(header, rows)))


if __name__ == "__main__":
    main()
