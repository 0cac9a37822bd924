"""Train-step throughput of flax_s2s against PyTorch, side by side in one process.

    PYTHONPATH=. python bench/train_vs_torch.py [--threads 1] [--parts transformer,ss,lstm] [--torch_compile]
        [--size bench|realistic] [--dtype float32|bfloat16]

- transformer: float32 matmul GFLOP/s on the model's MLP shapes (JAX and torch, the ceiling)
  and the teacher-forced train step (d_model 256, 4 heads, ff 1024, 3+3 layers, vocab 64,
  batch 64, lengths 24/24, AdamW + clipping) in flax_s2s, PyTorch eager, and torch.compile
  (--torch_compile); target tokens/s and model FLOPs utilisation against the ceiling.
  `--dtype bfloat16`: flax_s2s with `model.dtype` bfloat16 (parameters float32), torch under
  `torch.autocast("cpu", dtype=torch.bfloat16)` (the ceiling stays float32's).
- ss: scheduled sampling (p = 0.5) `exact` (both ways of computing it) and `two_pass` as ratios
  to the teacher-forced step, with compile times, on the Transformer and the LSTM.
- lstm: the default LSTM-attention model (emb 64, hidden 128 bidirectional, attention 128,
  batch 128, lengths 8/6) against nn.LSTM + additive attention.
Needs the `bench` extra (torch). Appends its tables to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys

import common

VOCAB = 64
# --size: the Transformer's d_model, heads, MLP width, layers per stack, vocabulary, batch and
# (source = target) length
SIZES = {"bench": (256, 4, 1024, 3, VOCAB, 64, 24), "realistic": (512, 8, 2048, 6, 16000, 32, 64)}


def transformer_config(mode: str | None = None, size: str = "bench", dtype: str = "float32"):
    from configs import default

    d_model, heads, mlp, layers, _, batch, length = SIZES[size]
    config = default.get_config()
    config.model.type = "transformer"
    config.model.norm, config.model.norm_position = "layer", "pre"
    config.model.d_model, config.model.num_heads, config.model.mlp_dim = d_model, heads, mlp
    config.model.num_encoder_layers = config.model.num_decoder_layers = layers
    config.batch_size, config.max_src_len, config.max_tgt_len = batch, length, length
    config.model.dtype = dtype
    if mode is not None:  # scheduled sampling at p = 0.5
        config.teacher_forcing.p, config.teacher_forcing.mode = 0.5, mode
    return config


def lstm_config():
    from configs import default

    config = default.get_config()  # lstm: emb 64, hidden 128 bidirectional, attention 128
    config.batch_size, config.max_src_len, config.max_tgt_len = 128, 8, 6
    return config


def batch_arrays(batch: int, src: int, tgt: int, vocab: int):
    """Random full-length tokens (no PAD, no special tokens): every position is real work."""
    import numpy as np

    rng = np.random.default_rng(0)
    return {
        "src_tokens": rng.integers(4, vocab, (batch, src), dtype=np.int32),
        "tgt_tokens": rng.integers(4, vocab, (batch, tgt), dtype=np.int32),
    }


def jax_step_fn(config, vocab: int, batch, graded_scan: bool | None = None, compile_times=None):
    """A zero-argument callable running one flax_s2s train step to completion. `graded_scan`
    picks the exact scheduled-sampling unroll (see forcing.TeacherForcing); with a dict
    `compile_times`, the step's compile seconds are stored in it under the returned callable."""
    import dataclasses
    import time

    import jax

    from flax_s2s import training
    from flax_s2s.forcing import TeacherForcing
    from flax_s2s.models import build_model

    model = build_model(config, vocab, vocab)
    tx = training.make_optimizer(config)
    state = [training.create_train_state(model, tx, config.seed, batch)]
    forcing = dataclasses.replace(TeacherForcing.from_config(config.teacher_forcing),
                                  graded_scan=graded_scan)
    device_batch = jax.device_put(batch)
    start = time.perf_counter()
    step = jax.jit(training.make_train_step(model, tx, config, forcing), donate_argnums=0).lower(
        state[0], device_batch).compile()
    compile_s = time.perf_counter() - start

    def run():
        state[0], metrics = step(state[0], device_batch)
        jax.block_until_ready(metrics["loss"])

    if compile_times is not None:
        compile_times[run] = compile_s
    return run


def torch_step_fn(model, batch, compile_model: bool = False, dtype: str = "float32"):
    import torch
    from torch_models import make_train_step

    src = torch.from_numpy(batch["src_tokens"]).long()
    tgt = torch.from_numpy(batch["tgt_tokens"]).long()
    tgt_inputs = torch.cat([torch.ones_like(tgt[:, :1]), tgt[:, :-1]], 1)  # BOS = 1
    if compile_model:
        model = torch.compile(model)
    step = make_train_step(model, autocast=None if dtype == "float32" else getattr(torch, dtype))
    return lambda: step(src, tgt_inputs, tgt).item()


def matmul_sides(calls: int = 20) -> tuple[dict, float]:
    """Callables doing `calls` float32 [1536, 256] @ [256, 1024] @ [1024, 256] products (the MLP
    sublayer's shapes) in JAX and torch, and the FLOPs of one call."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((1536, 256), np.float32), rng.standard_normal((256, 1024), np.float32)
    c = rng.standard_normal((1024, 256), np.float32)
    ja, jb, jc = map(jnp.asarray, (a, b, c))
    jmm = jax.jit(lambda a, b, c: (a @ b) @ c)
    ta, tb, tc = map(torch.from_numpy, (a, b, c))

    def jax_calls():
        jax.block_until_ready([jmm(ja, jb, jc) for _ in range(calls)])

    def torch_calls():
        for _ in range(calls):
            (ta @ tb) @ tc

    return {"jax matmul": jax_calls, "torch matmul": torch_calls}, calls * 2 * 2 * 1536 * 256 * 1024


def run_transformer(args) -> list[str]:
    import torch
    from torch_models import TorchTransformer

    d_model, heads, mlp, layers, vocab, batch_size, length = SIZES[args.size]
    batch = batch_arrays(batch_size, length, length, vocab)
    flops = common.transformer_train_flops(batch_size, length, length, d_model, mlp, layers, vocab)
    torch.manual_seed(0)
    matmuls, matmul_flops = matmul_sides()

    def torch_model():
        return TorchTransformer(vocab, d_model, heads, mlp, layers, layers, max(64, length))

    sides = {
        "flax_s2s": jax_step_fn(transformer_config(size=args.size, dtype=args.dtype), vocab, batch),
        "torch eager": torch_step_fn(torch_model(), batch, dtype=args.dtype),
    }
    if args.torch_compile:
        try:
            compiled = torch_step_fn(torch_model(), batch, True, args.dtype)
            compiled()  # compiles here, outside the timed windows
            sides["torch.compile"] = compiled
        except Exception as error:  # noqa: BLE001 - report any failure of the optional side
            print(f"torch.compile failed: {error!r}", file=sys.stderr)
    # The ceiling is timed in the same alternating windows, so it sees the same machine load.
    times = common.compare({**sides, **matmuls}, windows=args.windows, repeats=args.repeats)
    rates = {name: matmul_flops / times.pop(name) / 1e9 for name in matmuls}
    ceiling = max(rates.values())
    tokens = batch_size * length
    rows = [
        (name, f"{t * 1e3:.0f}", f"{tokens / t:.0f}", f"{flops / t / 1e9:.1f}",
         f"{100 * flops / t / 1e9 / ceiling:.0f}%", f"{times['torch eager'] / t:.2f}")
        for name, t in times.items()
    ]
    return [
        f"Transformer d_model {d_model}, {heads} heads, ff {mlp}, {layers}+{layers} layers, "
        f"vocabulary {vocab}, batch {batch_size} x {length} source and target tokens, compute "
        f"dtype {args.dtype}" + (" (torch: autocast)" if args.dtype != "float32" else "") + ".",
        "",
        "Float32 matmul ceiling, [1536,256] @ [256,1024] @ [1024,256] (the MLP sublayer's shapes), "
        "timed in the same windows as the train steps: "
        + ", ".join(f"{name} {rate:.1f} GFLOP/s" for name, rate in rates.items()) + ".",
        "",
        f"Model FLOPs per train step (matmuls, forward x3): {flops / 1e9:.1f} GFLOP; "
        f"MFU against the best matmul rate, {ceiling:.1f} GFLOP/s.",
        "",
        *common.table(["side", "ms/step", "target tokens/s", "GFLOP/s", "MFU", "x torch eager"], rows),
    ]


def run_scheduled_sampling(args) -> list[str]:
    """Each scheduled-sampling train step as a ratio to the teacher-forced one, on the
    Transformer and on the LSTM, with `exact` both ways: a scan without gradient then one
    parallel pass (the Transformer's default) and one scan with its gradient (the RNN's)."""
    lines = []
    for model_name, make_config, vocab, shape in (
        ("Transformer of the table above", transformer_config, VOCAB, (64, 24, 24)),
        ("LSTM of the table below", lstm_ss_config, 16, (128, 8, 6)),
    ):
        batch = batch_arrays(*shape, vocab)
        compiled: dict = {}
        sides = {
            "teacher forced": jax_step_fn(make_config(), vocab, batch, compile_times=compiled),
            "two_pass": jax_step_fn(make_config("two_pass"), vocab, batch, compile_times=compiled),
            "exact: scan without gradient + parallel pass": jax_step_fn(
                make_config("exact"), vocab, batch, graded_scan=False, compile_times=compiled),
            "exact: one scan with gradient": jax_step_fn(
                make_config("exact"), vocab, batch, graded_scan=True, compile_times=compiled),
        }
        repeats = args.repeats if vocab == VOCAB else 4 * args.repeats
        times = common.compare(sides, windows=args.windows, repeats=repeats)
        base = times["teacher forced"]
        rows = [(name, f"{t * 1e3:.1f}", f"{t / base:.2f}", f"{compiled[sides[name]]:.1f}")
                for name, t in times.items()]
        lines += [
            f"{model_name}, scheduled sampling at p = 0.5 (argmax own tokens), batch {shape[0]}, "
            f"lengths {shape[1]}/{shape[2]}.",
            "",
            *common.table(["train step", "ms/step", "x teacher forced", "compile s"], rows),
            "",
        ]
    return lines[:-1]


def lstm_ss_config(mode: str | None = None):
    config = lstm_config()
    if mode is not None:
        config.teacher_forcing.p, config.teacher_forcing.mode = 0.5, mode
    return config


def run_lstm(args) -> list[str]:
    import torch
    from torch_models import TorchLstmAttention

    vocab = 16
    batch = batch_arrays(128, 8, 6, vocab)
    torch.manual_seed(0)
    sides = {
        "flax_s2s": jax_step_fn(lstm_config(), vocab, batch),
        "torch eager": torch_step_fn(TorchLstmAttention(vocab, 64, 128, 128), batch),
    }
    times = common.compare(sides, windows=args.windows, repeats=4 * args.repeats)
    rows = [(name, f"{t * 1e3:.2f}", f"{128 * 6 / t:.0f}", f"{times['torch eager'] / t:.2f}")
            for name, t in times.items()]
    return [
        "LSTM-attention model of configs/default.py (emb 64, hidden 128 per direction, "
        "bidirectional, attention 128), vocab 16, batch 128, lengths 8/6, teacher forced.",
        "",
        *common.table(["side", "ms/step", "target tokens/s", "x torch eager"], rows),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", default="transformer,ss,lstm")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--torch_compile", action="store_true")
    parser.add_argument("--size", choices=sorted(SIZES), default="bench",
                        help="the Transformer part's size: bench's or realistic (16k vocabulary)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="the Transformer part's compute dtype (torch: autocast)")
    parser.add_argument("--no_record", action="store_true", help="print, do not append to RESULTS.md")
    args = parser.parse_args()
    common.set_threads(args.threads)
    load_before = common.load_average()
    parts = args.parts.split(",")
    lines: list[str] = []
    if "transformer" in parts:
        lines += run_transformer(args) + [""]
    if "ss" in parts:
        lines += run_scheduled_sampling(args) + [""]
    if "lstm" in parts:
        lines += run_lstm(args) + [""]
    header = common.machine_lines(args.threads, load_before)
    command = f"PYTHONPATH=. python bench/train_vs_torch.py {' '.join(sys.argv[1:])}".strip()
    section = [*header, "", "```bash", command, "```", "", *lines,
               f"Median of {args.windows} alternating windows of {args.repeats} steps after 2 "
               "warm-up steps (LSTM: 4x the steps per window)."]
    if args.no_record:
        print("\n".join(section))
    else:
        common.append_section("Train step against PyTorch (`bench/train_vs_torch.py`)", section)


if __name__ == "__main__":
    main()
