"""The float32 matmul kernels under each side's steps: XLA:CPU's (YNNPACK, or Eigen where
YNNPACK declines the dot) against PyTorch's (MKL / oneDNN), shape by shape, one thread.

    taskset -c 0 python bench/matmul_kernels.py [--windows 5] [--no_record]

Shapes: the dense layers of a batch-64 greedy decoding step at the BART shape of
bench/decode_realistic.py (64 rows: MLP in and out, the 16k-vocabulary projection) and of the
bench-size and realistic-size train steps of bench/train_vs_torch.py (1536 and 2048 rows). Forms:
the forward `x @ W` (flax's Dense, W [in, out]), torch's `F.linear(x, W^T)` (nn.Linear, Hugging
Face's layers, W stored [out, in]) and `x @ W`, and the weight gradient `x^T dy` on each side.
GFLOP/s from the median of alternating windows (`common.compare`); the ratio column reads
JAX / torch for the form each side's models use (Dense against nn.Linear, x^T dy against x^T dy).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import common

# (rows, in, out): decoding at batch 64 (BART shape), train steps (bench, realistic).
SHAPES = [(64, 512, 2048), (64, 2048, 512), (64, 512, 16000),
          (1536, 256, 1024), (1536, 1024, 256), (2048, 512, 2048), (2048, 2048, 512)]
# The timed forms, in the table's column order: (name, column header).
FORMS = [("jax x@W", "JAX x @ W"), ("torch linear", "torch F.linear"), ("torch x@W", "torch x @ W"),
         ("jax x^T dy", "JAX x^T dy"), ("torch x^T dy", "torch x^T dy")]
WINDOW_SECONDS, ROUGH_FLOPS = 0.05, 120e9  # repeats per window: about 50 ms at 120 GFLOP/s


def sides(m: int, k: int, n: int) -> dict[str, Callable[[], object]]:
    """{form: call} on random float32 operands, the same numbers on both sides."""
    import jax
    import torch
    from jax import lax

    forward = jax.jit(lambda x, w: x @ w)
    weight_grad = jax.jit(lambda x, dy: lax.dot_general(x, dy, (((0,), (0,)), ((), ()))))
    key_x, key_w, key_dy = jax.random.split(jax.random.PRNGKey(0), 3)
    x, w = jax.random.normal(key_x, (m, k)), jax.random.normal(key_w, (k, n))
    dy = jax.random.normal(key_dy, (m, n))
    tx, tw, tdy = (torch.from_numpy(jax.device_get(a).copy()) for a in (x, w, dy))
    tw_t = tw.T.contiguous()  # nn.Linear's layout: [out, in]
    return {
        "jax x@W": lambda: forward(x, w).block_until_ready(),
        "torch linear": lambda: torch.nn.functional.linear(tx, tw_t),
        "torch x@W": lambda: tx @ tw,
        "jax x^T dy": lambda: weight_grad(x, dy).block_until_ready(),
        "torch x^T dy": lambda: tx.T @ tdy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--no_record", action="store_true")
    args = parser.parse_args()
    common.set_threads(1)
    load_before = common.load_average()
    rows = []
    for m, k, n in SHAPES:
        repeats = max(1, int(WINDOW_SECONDS * ROUGH_FLOPS / (2 * m * k * n)))
        seconds = common.compare(sides(m, k, n), windows=args.windows, repeats=repeats)
        gflops = {name: 2 * m * k * n / s / 1e9 for name, s in seconds.items()}
        rows.append((f"{m}, {k}, {n}", *(f"{gflops[name]:.0f}" for name, _ in FORMS),
                     f"{gflops['jax x@W'] / gflops['torch linear']:.2f}",
                     f"{gflops['jax x^T dy'] / gflops['torch x^T dy']:.2f}"))
    section = [
        *common.machine_lines(1, load_before), "", "```bash",
        "taskset -c 0 python bench/matmul_kernels.py" + (f" --windows {args.windows}"
                                                         if args.windows != 5 else ""),
        "```", "", "GFLOP/s, float32, one thread (rows, in, out):", "",
        *common.table(["rows, in, out", *(header for _, header in FORMS),
                       "JAX / torch, forward", "JAX / torch, weight gradient"], rows),
    ]
    if args.no_record:
        print("\n".join(section))
    else:
        common.append_section("Matmul kernels under each side (`bench/matmul_kernels.py`)", section)


if __name__ == "__main__":
    main()
