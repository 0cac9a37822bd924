"""The cost per train step of each exposure-bias remedy against the teacher-forced step, on one
model and one batch, in one process.

    taskset -c 1 python bench/remedy_cost.py [--models lstm transformer] [--batch 64]
        [--windows 7] [--repeats 3]

Arms (each its own jitted `make_train_step`, all on the same state and batch): teacher forcing;
scheduled sampling (p = 0.75, the exact unroll, argmax own tokens); the same with oracle targets
(`teacher_forcing.oracle_targets`); decoder-input noise (rate 0.1); minimum risk training
(`config.mrt`, weight 0.5, k = 4 sampled candidates; and k = 4 from beam search). The data are
reversals of random strings over 26 symbols, sources of up to `--src_len` symbols; the targets
fill `--tgt_len` tokens with EOS. Steps are timed in alternating windows (`common.compare`): read
the ratios to the teacher-forced step, the absolute times move with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LETTERS = "abcdefghijklmnopqrstuvwxyz"
MODELS = {
    "lstm": {"type": "lstm", "emb_dim": 64, "hidden_dim": 128, "attention_dim": 64},
    "transformer": {"type": "transformer", "d_model": 64, "num_heads": 4, "mlp_dim": 256,
                    "num_encoder_layers": 2, "num_decoder_layers": 2},
}
ARMS = {  # name -> (teacher_forcing fields, mrt fields)
    "teacher forcing": ({}, {}),
    "scheduled sampling": ({"p": 0.75}, {}),
    "oracle targets": ({"p": 0.75, "oracle_targets": True}, {}),
    "input noise": ({"input_noise": 0.1}, {}),
    "MRT k=4 sample": ({}, {"weight": 0.5, "num_candidates": 4, "candidates": "sample"}),
    "MRT k=4 beam": ({}, {"weight": 0.5, "num_candidates": 4, "candidates": "beam"}),
}


def arm_config(model: str, arm: str, args: argparse.Namespace):
    from configs import default

    config = default.get_config()
    config.model.update(MODELS[model])
    config.batch_size, config.max_src_len, config.max_tgt_len = args.batch, args.src_len, args.tgt_len
    forcing, mrt = ARMS[arm]
    config.teacher_forcing.update(forcing)
    config.mrt.update(mrt)
    return config


def reverse_batch(config, seed: int):
    """One batch of reversed random strings (every length from 1 to max_src_len - 1)."""
    import numpy as np

    from flax_s2s.data import pipeline
    from flax_s2s.data.vocab import SymbolVocab

    rng = np.random.default_rng(seed)
    vocab = SymbolVocab.build(LETTERS)
    texts = ["".join(rng.choice(list(LETTERS), rng.integers(1, config.max_src_len)))
             for _ in range(4 * config.batch_size)]
    examples = pipeline.tokenize([(t, t[::-1]) for t in texts], vocab, vocab,
                                 config.max_src_len, config.max_tgt_len)
    return vocab, pipeline.train_dataset(examples, config.batch_size, config.seed)[0]


def time_model(model_kind: str, args: argparse.Namespace) -> list[list[object]]:
    import jax

    from flax_s2s import training
    from flax_s2s.models import build_model
    from flax_s2s.training.config import validate_config

    base = arm_config(model_kind, "teacher forcing", args)
    vocab, batch = reverse_batch(base, base.seed)
    model = build_model(base, len(vocab), len(vocab))
    tx = training.make_optimizer(base)
    state = training.create_train_state(model, tx, base.seed, batch)
    calls = {}
    for arm in ARMS:
        config = arm_config(model_kind, arm, args)
        validate_config(config)
        step = jax.jit(training.make_train_step(model, tx, config))
        calls[arm] = lambda step=step: jax.block_until_ready(step(state, batch))
        print(f"compiling {model_kind}: {arm}", file=sys.stderr, flush=True)
    seconds = common.compare(calls, warmup=2, windows=args.windows, repeats=args.repeats)
    forced = seconds["teacher forcing"]
    return [[model_kind, arm, 1000 * s, f"{s / forced:.2f}x"] for arm, s in seconds.items()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--src_len", type=int, default=14)
    parser.add_argument("--tgt_len", type=int, default=14)
    parser.add_argument("--windows", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    common.set_threads(args.threads)  # before jax is imported
    load_before = common.load_average()
    rows = []
    for model_kind in args.models:
        rows += time_model(model_kind, args)
    print("\n".join(common.machine_lines(args.threads, load_before)))
    print(f"- batch {args.batch}, {args.src_len} source / {args.tgt_len} target tokens; median "
          f"of {args.windows} alternating windows of {args.repeats} steps\n")
    header = ["model", "arm", "ms / step", "vs teacher forcing"]
    print("\n".join(common.table(header, rows)))


if __name__ == "__main__":
    main()
