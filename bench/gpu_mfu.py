"""Model FLOPs utilisation of the project's own Transformer train step on the accelerators, bf16.

    PYTHONPATH=. python bench/gpu_mfu.py [--peak 989e12] [--steps 20] [--attention auto|xla|cudnn]
    PYTHONPATH=. python bench/gpu_mfu.py --tiny     # seconds on CPU, to test the script

What is timed is the step `train.py` runs: the train state from `training.create_train_state`
placed on the mesh of `config.mesh_shape` with `sharding.train_state_shardings`, and the step
from `training.jit_steps` (`training.make_train_step` jitted with those shardings, the state
donated, each numpy batch placed as a global array), with AdamW, clipping and the non-finite
guard. Compute in bfloat16 (`config.model.dtype`), parameters and optimizer state in float32;
attention as `config.model.attention` says (`auto`: cuDNN's fused kernel on a CUDA GPU; the
line `attention:` says which ran). Default size: d_model 1024, 16 heads, ff 4096, 6+6 layers,
vocab 32768, batch 64, lengths 256/256 (21.5 TFLOP per step). MFU = matmul FLOPs of forward +
backward (3x forward, counted as in bench/common.py: attention in full, also where the causal
kernel skips the upper triangle) per second over `--peak`, the device's dense bf16 peak (default
989e12: H100/H200 SXM). Prints, writes nothing.

It imports the project's training module, so a GPU host needs the project's dependencies, not
only jax, flax and optax: `bench/gpu_wheels.py build` makes here a folder of the wheels such a
host lacks, `bench/gpu_wheels.py install` installs them there without an index, and
`bench/gpu_check.sh` runs this script and a G2P training run there in one go.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/common.py
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project

import common  # noqa: E402 - no thread settings here; only for transformer_train_flops

TINY = {"d_model": 32, "heads": 2, "layers": 1, "vocab": 32, "batch": 4, "length": 8, "steps": 2}


def config_for(args: argparse.Namespace) -> Any:
    """The default config with the benchmark's Transformer, batch and lengths."""
    from configs import default

    config = default.get_config()
    config.model.type = "transformer"
    config.model.norm, config.model.norm_position = "layer", "pre"
    config.model.dtype = args.dtype
    config.model.attention = args.attention
    config.model.d_model, config.model.num_heads = args.d_model, args.heads
    config.model.mlp_dim = 4 * args.d_model
    config.model.num_encoder_layers = config.model.num_decoder_layers = args.layers
    config.batch_size, config.max_src_len, config.max_tgt_len = args.batch, args.length, args.length
    config.eval_batch_size = args.batch
    return config


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
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
    parser.add_argument("--dtype", default="bfloat16", help="config.model.dtype")
    parser.add_argument("--attention", default="auto", help="config.model.attention")
    parser.add_argument("--tiny", action="store_true", help="a tiny model, for testing on CPU")
    args = parser.parse_args(argv)
    if args.tiny:
        vars(args).update(TINY)
    return args


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Builds the config's model, train state and jitted step as a training run does, runs one
    step (compile), one more (warm-up), then times `args.steps` steps on one fixed batch of
    [batch, length] tokens. Returns the timings, the FLOP count, the last step's metrics and
    the final state."""
    import jax
    import numpy as np

    from flax_s2s import sharding, training
    from flax_s2s.models import build_model
    from flax_s2s.models.attention import attention_implementation
    from flax_s2s.training.config import validate_config

    config = config_for(args)
    validate_config(config, jax.device_count())
    mesh = sharding.make_mesh(config.mesh_shape)
    model = build_model(config, args.vocab, args.vocab)
    tx = training.make_optimizer(config)
    rng = np.random.default_rng(0)
    shape = (args.batch, args.length)
    batch = {  # full-length rows (no padding), as the FLOP count assumes
        "src_tokens": rng.integers(4, args.vocab, shape, dtype=np.int32),
        "tgt_tokens": rng.integers(4, args.vocab, shape, dtype=np.int32),
    }
    abstract = training.abstract_train_state(model, tx, config.seed, batch)
    state_shardings = sharding.train_state_shardings(abstract, tx, mesh, config.fsdp)
    state = training.create_train_state(model, tx, config.seed, batch, state_shardings)
    step = training.jit_steps(model, tx, config, mesh, state_shardings).train

    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    state, metrics = step(state, batch)  # one more warm-up step
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    step_s = (time.perf_counter() - start) / args.steps

    flops = common.transformer_train_flops(
        args.batch, args.length, args.length, args.d_model, 4 * args.d_model, args.layers, args.vocab
    )
    c = model.module.config
    return {
        "compile_s": compile_s,
        "step_s": step_s,
        "flops": flops,
        "mfu": flops / step_s / args.peak,
        "attention": attention_implementation(c.attention, c.dtype, c.d_model // c.num_heads,
                                              args.length),
        "params": sum(x.size for x in jax.tree.leaves(state.params)),
        "metrics": jax.device_get(metrics),
        "state": state,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import jax

    result = measure(args)
    step_s, flops = result["step_s"], result["flops"]
    print(f"device: {jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"jax {jax.__version__}")
    print(f"model: d_model {args.d_model}, heads {args.heads}, ff {4 * args.d_model}, "
          f"{args.layers}+{args.layers} layers, vocab {args.vocab}, {result['params'] / 1e6:.1f}M "
          f"params, batch {args.batch}, lengths {args.length}/{args.length}, {args.dtype} compute, "
          f"fp32 params")
    print(f"attention: {result['attention']} (config.model.attention={args.attention!r})")
    print(f"first step (compile + run): {result['compile_s']:.1f} s")
    print(f"step: {step_s * 1e3:.2f} ms (mean of {args.steps}); "
          f"target tokens/s: {args.batch * args.length / step_s:,.0f}")
    print(f"model FLOPs/step: {flops / 1e12:.4g} TFLOP; achieved {flops / step_s / 1e12:.4g} TFLOP/s; "
          f"MFU {100 * result['mfu']:.3g}% of {args.peak / 1e12:.0f} TFLOP/s; "
          f"loss {float(result['metrics']['loss']):.3f}")
    return result


if __name__ == "__main__":
    main()
