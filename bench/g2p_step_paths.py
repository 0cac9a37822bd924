"""The G2P train step under teacher forcing and under scheduled sampling, per length bucket, with
the scans over time unrolled as shipped (`unroll.scan_unroll`: full up to 12 steps, rolled
beyond), 8 steps per loop iteration at every length (the setting before), or rolled.

    python bench/g2p_step_paths.py [--threads 1] [--data_dir DIR]

Written when the scheduled-sampling arm of the one-hour GRU, side by side on one core each
(`bench/g2p_scheduled_sampling.py`), made more steps per second than the teacher-forced one
although it does more work per step. Then the two arms' decoder loops compiled differently
(teacher forcing unrolled 8, the scheduled-sampling scan rolled); timed here they cost the same,
and the per-bucket times led to the per-length rule. Each setting's steps are timed in
alternating windows, and each bucket's time is weighed by its share of the training batches.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1, help="XLA threads (1: as in the side-by-side runs)")
    parser.add_argument("--data_dir", default="", help="TFDS data dir (default: the configs' own)")
    parser.add_argument("--workdir", default="/tmp/g2p_step_paths")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    common.set_threads(args.threads)  # before jax is imported, below
    import jax
    import numpy as np

    from configs import g2p_gru, g2p_gru_ss
    from flax_s2s import training
    from flax_s2s.data import pipeline, task_data
    from flax_s2s.models import build_model, unroll

    load_before = common.load_average()
    configs = {"teacher forcing": g2p_gru.get_config(), "scheduled sampling": g2p_gru_ss.get_config()}
    for config in configs.values():
        config.data_dir = args.data_dir or config.data_dir
    config = configs["teacher forcing"]
    data = task_data.load_task_data(config, args.workdir, ("train",))
    examples = data.splits["train"]
    shapes = pipeline.bucket_shapes(config.max_src_len, config.max_tgt_len, config.bucket_boundaries)
    buckets = pipeline.assign_buckets(examples, shapes)
    shares = np.bincount(buckets, minlength=len(shapes)) / len(examples)
    model = build_model(config, len(data.src_vocab), len(data.tgt_vocab))
    tx = training.make_optimizer(config)
    rng = np.random.default_rng(0)
    batches = []
    for index, (src_len, tgt_len) in enumerate(shapes):
        rows = rng.choice(np.flatnonzero(buckets <= index), config.batch_size, replace=False)
        batches.append({"src_tokens": examples.src[rows, :src_len],
                        "tgt_tokens": examples.tgt[rows, :tgt_len]})
    state = training.create_train_state(model, tx, config.seed, batches[0])

    shipped = unroll.scan_unroll
    rules = {"shipped": shipped, "8": lambda length: 8, "rolled": lambda length: 1}
    compiled = {}
    try:
        for arm in configs:
            for setting, rule in rules.items():
                # The unroll is read when the step is traced: set it, then compile each shape.
                unroll.scan_unroll = rule
                step = jax.jit(training.make_train_step(model, tx, configs[arm]))
                compiled[arm, setting] = [step.lower(state, batch).compile() for batch in batches]
    finally:
        unroll.scan_unroll = shipped

    seconds = {variant: [] for variant in compiled}
    for index, batch in enumerate(batches):
        sides = {variant: (lambda fn=fns[index], batch=batch: jax.block_until_ready(fn(state, batch)))
                 for variant, fns in compiled.items()}
        for variant, value in common.compare(sides, warmup=2, windows=5, repeats=5).items():
            seconds[variant].append(value)

    print("\n".join(common.machine_lines(args.threads, load_before)))
    print(f"- configs/g2p_gru.py model, batch {config.batch_size}; bucket shares "
          + ", ".join(f"{s}x{t}: {share:.3f}" for (s, t), share in zip(shapes, shares, strict=True)))
    print("- median of 5 alternating windows of 5 steps; weighted = sum of share x time\n")
    header = ["arm", "unroll", *[f"{s}x{t} ms" for s, t in shapes], "weighted ms", "steps/s",
              "vs teacher forcing as shipped"]
    base = float(np.dot(shares, seconds["teacher forcing", "shipped"]))
    rows = []
    for arm, setting in compiled:
        weighted = float(np.dot(shares, seconds[arm, setting]))
        rows.append([arm, setting, *[1000 * s for s in seconds[arm, setting]], 1000 * weighted,
                     1 / weighted, f"{base / weighted:.2f}x"])
    print("\n".join(common.table(header, rows)))


if __name__ == "__main__":
    main()
