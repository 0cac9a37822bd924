"""Model FLOPs utilisation of the teacher-forced Transformer train step on one accelerator, bf16.

    PYTHONPATH=. python bench/gpu_mfu.py [--peak 989e12] [--steps 20]
    PYTHONPATH=. python bench/gpu_mfu.py --tiny     # a few seconds on CPU, to test the script

Compute in bfloat16 (`config.model.dtype`), parameters and optimizer state in float32, the
project's own train step (AdamW, clipping, non-finite guard). Default size: d_model 1024, 16
heads, ff 4096, 6+6 layers, vocab 32768, batch 64, lengths 256/256 (about 20 TFLOP per step).
MFU = matmul FLOPs of forward + backward (3x forward, counted as in bench/common.py) per second
over `--peak`, the device's dense bf16 peak (default 989e12: H100 SXM). Needs only jax, flax,
optax and the project; prints, writes nothing.
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401 - no thread settings here; only for transformer_train_flops


def config_for(args):
    from configs import default

    config = default.get_config()
    config.model.type = "transformer"
    config.model.norm, config.model.norm_position = "layer", "pre"
    config.model.dtype = "bfloat16"
    config.model.d_model, config.model.num_heads = args.d_model, args.heads
    config.model.mlp_dim = 4 * args.d_model
    config.model.num_encoder_layers = config.model.num_decoder_layers = args.layers
    config.batch_size, config.max_src_len, config.max_tgt_len = args.batch, args.length, args.length
    return config


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peak", type=float, default=989e12, help="dense bf16 FLOP/s of the device")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--d_model", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--tiny", action="store_true", help="a tiny model, for testing on CPU")
    args = parser.parse_args()
    if args.tiny:
        args.d_model, args.heads, args.layers, args.vocab = 64, 4, 2, 64
        args.batch, args.length, args.steps = 8, 16, 3

    import jax
    import numpy as np

    from flax_s2s import training
    from flax_s2s.models import build_model

    config = config_for(args)
    model = build_model(config, args.vocab, args.vocab)
    tx = training.make_optimizer(config)
    rng = np.random.default_rng(0)
    shape = (args.batch, args.length)
    batch = jax.device_put({
        "src_tokens": rng.integers(4, args.vocab, shape, dtype=np.int32),
        "tgt_tokens": rng.integers(4, args.vocab, shape, dtype=np.int32),
    })
    state = training.create_train_state(model, tx, config.seed, batch)
    step = jax.jit(training.make_train_step(model, tx, config), donate_argnums=0)

    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    state, metrics = step(state, batch)  # one more warm-up step
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - start) / args.steps

    flops = common.transformer_train_flops(
        args.batch, args.length, args.length, args.d_model, 4 * args.d_model, args.layers, args.vocab
    )
    params = sum(x.size for x in jax.tree.leaves(state.params))
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    print(f"model: d_model {args.d_model}, heads {args.heads}, ff {4 * args.d_model}, "
          f"{args.layers}+{args.layers} layers, vocab {args.vocab}, {params / 1e6:.1f}M params, "
          f"batch {args.batch}, lengths {args.length}/{args.length}, bf16 compute, fp32 params")
    print(f"first step (compile + run): {compile_s:.1f} s")
    print(f"step: {step_s * 1e3:.2f} ms (mean of {args.steps}); "
          f"target tokens/s: {args.batch * args.length / step_s:,.0f}")
    print(f"model FLOPs/step: {flops / 1e12:.4g} TFLOP; achieved {flops / step_s / 1e12:.4g} TFLOP/s; "
          f"MFU {100 * flops / step_s / args.peak:.3g}% of {args.peak / 1e12:.0f} TFLOP/s; "
          f"loss {float(metrics['loss']):.3f}")


if __name__ == "__main__":
    main()
