"""Does length bucketing pay on CMUdict G2P, and how many words/s does a G2P candidate train at?
Times the jitted train step at each bucket shape and weighs it by the share of batches each
bucket gets, against every batch at the maximum lengths.

    python bench/g2p_buckets.py [--config configs.g2p_lstm] [--steps 30] [--hidden_dim 256]
        [--num_encoder_layers 2] [--batch_size 128] [--teachers 2] [--data_dir DIR]
        [--dtype bfloat16]

`--teachers N` adds N teachers of `configs/g2p_gru.py`'s size (random weights: the cost depends
on the shapes, not the values) to the step, as token-level distillation runs them
(`config.distill`, docs/distillation.md). Prints the bucket shares, seconds per step at each
shape, and words/s with and without buckets.
"""

import argparse
import importlib
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flax_s2s import training  # noqa: E402
from flax_s2s.data import pipeline, task_data  # noqa: E402
from flax_s2s.models import build_model  # noqa: E402


def time_steps(train_step, state, batch, steps, extra=()):
    state, out = train_step(state, batch, *extra)  # compile
    jax.block_until_ready(out)
    start = time.perf_counter()
    for _ in range(steps):
        state, out = train_step(state, batch, *extra)
    jax.block_until_ready(out)
    return state, (time.perf_counter() - start) / steps


def load_config(args):
    config = importlib.import_module(args.config).get_config()
    if args.hidden_dim:
        config.model.hidden_dim = config.model.attention_dim = args.hidden_dim
    config.model.num_encoder_layers = args.num_encoder_layers or config.model.num_encoder_layers
    config.batch_size = args.batch_size or config.batch_size
    config.data_dir = args.data_dir or config.data_dir
    config.model.dtype = args.dtype or config.model.dtype
    return config


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs.g2p_lstm")
    parser.add_argument("--hidden_dim", type=int, default=0, help="also the attention width")
    parser.add_argument("--num_encoder_layers", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=0)
    parser.add_argument("--teachers", type=int, default=0, help="teachers of g2p_gru's size")
    parser.add_argument("--data_dir", default="")
    parser.add_argument("--dtype", default="", help="the model's compute dtype (float32, bfloat16)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workdir", default="/tmp/g2p_bucket_bench")
    args = parser.parse_args()
    config = load_config(args)
    data = task_data.load_task_data(config, args.workdir, ("train",))
    examples = data.splits["train"]
    shapes = pipeline.bucket_shapes(config.max_src_len, config.max_tgt_len, config.bucket_boundaries)
    shares = np.bincount(pipeline.assign_buckets(examples, shapes), minlength=len(shapes)) / len(examples)
    vocab_sizes = (len(data.src_vocab), len(data.tgt_vocab))
    model = build_model(config, *vocab_sizes)
    tx = training.make_optimizer(config)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(examples), config.batch_size, replace=False)
    first = {"src_tokens": examples.src[rows], "tgt_tokens": examples.tgt[rows]}
    state = training.create_train_state(model, tx, config.seed, first)
    teacher = build_model(importlib.import_module("configs.g2p_gru").get_config(), *vocab_sizes)
    teachers = (teacher,) * args.teachers
    extra = ()
    if teachers:
        extra = (tuple(teacher.init(jax.random.PRNGKey(seed + 1), first["src_tokens"], first["tgt_tokens"])
                       for seed in range(args.teachers)),)
    train_step = jax.jit(training.make_train_step(model, tx, config, teachers=teachers), donate_argnums=0)
    seconds = []
    for src_len, tgt_len in shapes:
        fits = pipeline.assign_buckets(examples, shapes) <= shapes.index((src_len, tgt_len))
        rows = rng.choice(np.flatnonzero(fits), config.batch_size, replace=False)
        batch = {"src_tokens": examples.src[rows, :src_len], "tgt_tokens": examples.tgt[rows, :tgt_len]}
        state, step_s = time_steps(train_step, state, batch, args.steps, extra)
        seconds.append(step_s)
        print(f"shape src={src_len} tgt={tgt_len}: share {shares[shapes.index((src_len, tgt_len))]:.3f}, "
              f"{step_s * 1000:.1f} ms/step", flush=True)
    bucketed = float(np.dot(shares, seconds))
    print(f"words/s: bucketed {config.batch_size / bucketed:.0f}, "
          f"unbucketed {config.batch_size / seconds[-1]:.0f} (speed-up x{seconds[-1] / bucketed:.2f})")


if __name__ == "__main__":
    main()
