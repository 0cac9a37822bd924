"""Shared helpers of the bench/ scripts: thread settings, machine facts, timing, batches, RESULTS.md.

Import this module before jax or torch: `set_threads` must run before either library starts its
thread pools. Every comparison times its sides alternately in one process (A, B, A, B, ...), so a
change of the machine's load hits both sides alike; the ratio of the medians is the number to
read, the absolute times move with the load. Pin the process with `taskset -c N` (one core per
thread): `compare` measures each side's process CPU seconds per wall second, and
`machine_lines` prints the pinning and that number, so a side that used more cores than it was
given shows in the run's own record.
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


# Process CPU seconds per wall second of each side timed by `compare`, for `machine_lines`: 1.00
# is one core kept busy.
CPU_USE: dict[str, float] = {}


def set_threads(threads: int) -> None:
    """Limits XLA:CPU, PyTorch and BLAS to `threads` threads (call before importing jax/torch).

    XLA:CPU has no thread-count flag: its pool is as wide as the cores the process may run on, so
    the process must be pinned (`taskset`); with one thread, Eigen's matmuls are also kept off
    that pool. `machine_lines` reports how many cores each side really kept busy."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1:
        flags += " --xla_cpu_multi_thread_eigen=false"
    os.environ["XLA_FLAGS"] = flags.strip()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may fetch model weights
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:  # torch is in the optional `bench` extra
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
    except ImportError:
        pass
    except RuntimeError:  # set already: a second bench script imported into the first
        pass


def pinned_cores() -> list[int]:
    """The cores this process may run on (`taskset` sets them)."""
    return sorted(os.sched_getaffinity(0))


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


def vector_isa() -> str:
    """The widest SIMD of this CPU that matmul kernels use (AVX-512, AVX2+FMA, ...)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown ISA"
    if "avx512f" in flags:
        return "AVX-512" + (" (+BF16)" if "avx512_bf16" in flags else "")
    return "AVX2+FMA" if {"avx2", "fma"} <= set(flags) else "no AVX2"


def cpu_use_line() -> str:
    """How many cores each side kept busy while timed (process CPU s / wall s)."""
    if not CPU_USE:
        return ""
    used = ", ".join(f"{name} {use:.2f}" for name, use in CPU_USE.items())
    return f"- Cores busy while timed (process CPU s / wall s): {used}"


def machine_lines(threads: int, load_before: float) -> list[str]:
    """The header of a RESULTS.md section: date, CPU, cores, pinning, threads and the cores each
    side really used, versions, load."""
    cores = pinned_cores()
    pinning = (f"pinned to core(s) {','.join(map(str, cores))} (taskset)"
               if len(cores) < (os.cpu_count() or 0) else "not pinned")
    return [
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- CPU: {cpu_model()} ({vector_isa()}), {os.cpu_count()} cores, {pinning}; {threads} "
        "thread(s) for every library (XLA:CPU pool by pinning, torch intra-op, OMP/MKL)",
        *([cpu_use_line()] if CPU_USE else []),
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
    return time_with_cpu(fn, repeats)[0]


def time_with_cpu(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(wall seconds per call, process CPU seconds per wall second) of `repeats` calls of `fn`."""
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        fn()
    wall = time.perf_counter() - start
    return wall / repeats, (time.process_time() - cpu) / wall


def compare(
    sides: dict[str, Callable[[], object]], *, warmup: int = 2, windows: int = 5, repeats: int = 3
) -> dict[str, float]:
    """Median seconds per call of each side, timed in alternating windows of `repeats` calls.
    Each side's median CPU use (process CPU s / wall s) goes to `CPU_USE` (the highest, where
    several comparisons time sides of one name)."""
    for fn in sides.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in sides}
    cpu_use: dict[str, list[float]] = {name: [] for name in sides}
    for window in range(windows):
        # Alternate the order too, so no side always runs right after the same neighbour.
        names = list(sides) if window % 2 == 0 else list(reversed(sides))
        for name in names:
            seconds, use = time_with_cpu(sides[name], repeats)
            samples[name].append(seconds)
            cpu_use[name].append(use)
    for name, values in cpu_use.items():
        CPU_USE[name] = max(CPU_USE.get(name, 0.0), statistics.median(values))
    return {name: statistics.median(values) for name, values in samples.items()}


def padding_fraction(batches, src_pad: int, tgt_pad: int) -> float:
    """Pad tokens over all tokens of the batches' sources and targets."""
    pad = sum(int((b["src_tokens"] == src_pad).sum() + (b["tgt_tokens"] == tgt_pad).sum())
              for b in batches)
    total = sum(b["src_tokens"].size + b["tgt_tokens"].size for b in batches)
    return pad / total


def representative(batches, count: int) -> list:
    """`count` of the batches, each shape in proportion to its share of them (largest
    remainders), in pipeline order: the timed mix of length buckets is the pipeline's."""
    shapes = [b["src_tokens"].shape for b in batches]
    share = {shape: shapes.count(shape) * count / len(batches) for shape in dict.fromkeys(shapes)}
    allotted = {shape: int(s) for shape, s in share.items()}
    by_remainder = sorted(share, key=lambda shape: share[shape] - allotted[shape], reverse=True)
    for shape in by_remainder[: count - sum(allotted.values())]:
        allotted[shape] += 1
    chosen = []
    for batch, shape in zip(batches, shapes, strict=True):
        if allotted[shape]:
            chosen.append(batch)
            allotted[shape] -= 1
    return chosen


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
