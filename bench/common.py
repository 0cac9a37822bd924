"""Shared helpers of the bench/ scripts: thread settings, machine facts, timing, RESULTS.md.

Import this module before jax or torch: `set_threads` must run before either library starts its
thread pools. Every comparison times its sides alternately in one process (A, B, A, B, ...), so a
change of the machine's load hits both sides alike; the ratio of the medians is the number to
read, the absolute times move with the load.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def set_threads(threads: int) -> None:
    """Limits XLA:CPU, PyTorch and BLAS to `threads` threads (call before importing jax/torch)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1:
        # XLA:CPU otherwise runs its Eigen matmuls on a pool as wide as the machine.
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["XLA_FLAGS"] = flags.strip()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may fetch model weights
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:  # torch is in the optional `bench` extra
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
    except ImportError:
        pass


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def load_average() -> float:
    return os.getloadavg()[0]


def versions(packages: Sequence[str] = ("jax", "jaxlib", "flax", "optax", "torch", "transformers")) -> str:
    found = []
    for name in packages:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def machine_lines(threads: int, load_before: float) -> list[str]:
    """The header of a RESULTS.md section: date, CPU, cores, threads, versions, load."""
    return [
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores; {threads} thread(s) for every library "
        "(XLA:CPU Eigen pool, torch intra-op, OMP/MKL)",
        f"- Versions: {versions()}",
        f"- Load average (1 min) before / after: {load_before:.2f} / {load_average():.2f}"
        + (" -- **the machine was busy: absolute times are inflated, read the ratios**"
           if max(load_before, load_average()) > 1.5 else ""),
    ]


def transformer_train_flops(
    batch: int, src: int, tgt: int, d: int, ff: int, layers: int, vocab: int
) -> float:
    """Matmul FLOPs of forward + backward (3x forward) of one teacher-forced step of an
    encoder-decoder Transformer with `layers` layers on each side (attention counted in full)."""
    enc_token = 2 * (4 * d * d + 2 * d * ff)  # self-attention projections + MLP
    dec_token = 2 * (4 * d * d + 2 * d * d + 2 * d * ff)  # + cross-attention Q and O
    cross_kv = 2 * 2 * d * d  # cross-attention K/V on each source token, per decoder layer
    attention = 4 * d * (src * src + tgt * tgt + tgt * src)  # scores + weighted values, per layer
    per_layer = src * enc_token + tgt * dec_token + src * cross_kv + attention
    output = tgt * 2 * d * vocab  # the output projection, once
    return 3.0 * batch * (layers * per_layer + output)


def time_once(fn: Callable[[], object], repeats: int) -> float:
    """Seconds per call of `fn` over `repeats` calls; `fn` must block until its work is done."""
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def compare(
    sides: dict[str, Callable[[], object]], *, warmup: int = 2, windows: int = 5, repeats: int = 3
) -> dict[str, float]:
    """Median seconds per call of each side, timed in alternating windows of `repeats` calls."""
    for fn in sides.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for window in range(windows):
        # Alternate the order too, so no side always runs right after the same neighbour.
        names = list(sides) if window % 2 == 0 else list(reversed(sides))
        for name in names:
            samples[name].append(time_once(sides[name], repeats))
    return {name: statistics.median(values) for name, values in samples.items()}


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def append_section(title: str, lines: Sequence[str], results: str = RESULTS) -> None:
    """Prints a section and appends it to RESULTS.md (never rewriting what is there)."""
    text = "\n".join([f"## {title}", "", *lines]) + "\n"
    print(text, flush=True)
    with open(results, "a", encoding="utf-8") as f:
        f.write("\n" + text)
