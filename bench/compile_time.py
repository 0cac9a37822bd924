"""Compile time of the train step and the decode functions, recompiles after the first call, and
the start-up of a repeated `train.py` run with the persistent compilation cache.

    PYTHONPATH=. python bench/compile_time.py [--threads 1] [--skip_train_py]

1. In one process, the Transformer of bench/train_vs_torch.py: seconds spent tracing, lowering
   and compiling (jax.monitoring events) for the first train step, greedy and beam 4 calls, then
   the number of compiles during 3 more calls of each (0 = nothing recompiles).
2. `train.py` three times on the reverse task with that Transformer and 2 train steps: without
   the cache (data prepared, nothing cached), with an empty cache, with the cache the previous run
   filled. The wall times compare the start-up cost that the cache removes.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common

EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CompileLog:
    """Sums jax.monitoring compile durations by phase and counts backend compiles."""

    def __init__(self) -> None:
        import jax

        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.compiles = 0
        jax.monitoring.register_event_duration_secs_listener(self._record)

    def _record(self, event: str, duration: float, **_) -> None:
        if event in EVENTS:
            self.seconds[EVENTS[event]] += duration
            self.compiles += event.endswith("backend_compile_duration")

    def take(self) -> tuple[dict[str, float], int]:
        seconds, compiles = dict(self.seconds), self.compiles
        self.seconds.clear()
        self.compiles = 0
        return seconds, compiles


def in_process(size: str = "bench") -> list[tuple]:
    import jax
    from train_vs_torch import SIZES, batch_arrays, transformer_config

    from flax_s2s import decoding, training
    from flax_s2s.models import build_model

    log = CompileLog()
    *_, vocab, batch_size, length = SIZES[size]
    config = transformer_config(size=size)
    model = build_model(config, vocab, vocab)
    tx = training.make_optimizer(config)
    batch = jax.device_put(batch_arrays(batch_size, length, length, vocab))
    state = [training.create_train_state(model, tx, config.seed, batch)]
    train_step = jax.jit(training.make_train_step(model, tx, config), donate_argnums=0)
    src = batch["src_tokens"]

    def train():
        state[0], metrics = train_step(state[0], batch)
        jax.block_until_ready(metrics)

    calls = {
        "train step": train,
        "greedy": lambda: jax.block_until_ready(decoding.greedy(model, state[0].variables, src, length)),
        "beam 4": lambda: jax.block_until_ready(
            decoding.beam_search(model, state[0].variables, src, 4, length)
        ),
    }
    log.take()  # forget initialisation's compiles
    rows = []
    for name, call in calls.items():
        start = time.perf_counter()
        call()
        first = time.perf_counter() - start
        seconds, compiles = log.take()
        start = time.perf_counter()
        for _ in range(3):
            call()
        steady = (time.perf_counter() - start) / 3
        _, recompiles = log.take()
        rows.append((name, f"{first:.2f}", f"{steady:.2f}", f"{seconds.get('trace', 0):.2f}",
                     f"{seconds.get('lower', 0):.2f}", f"{seconds.get('compile', 0):.2f}",
                     compiles, recompiles))
    return rows


def train_py_runs(threads: int) -> list[tuple]:
    """Wall time of three short train.py runs (see the module docstring)."""
    base = tempfile.mkdtemp(prefix="flax_s2s_cache_bench_")
    overrides = [
        "--config=configs/reverse_transformer.py", "--config.model.d_model=256",
        "--config.model.mlp_dim=1024", "--config.model.num_encoder_layers=3",
        "--config.model.num_decoder_layers=3", "--config.model.share_embeddings=False",
        "--config.model.tie_output=False", "--config.num_train_steps=2",
        "--config.checkpoint_every=1000", "--config.eval_every=1000",
    ]
    env = {**os.environ, "PYTHONPATH": ROOT}
    rows = []
    try:
        for run, cache in (("no cache (data prepared)", "none"), ("empty cache", ""),
                           ("cache filled by the run before", "")):
            workdir = os.path.join(base, f"run{len(rows)}")
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={workdir}",
                 *overrides, f"--config.compilation_cache_dir={cache}"],
                cwd=ROOT, env=env, check=True, capture_output=True, text=True,
            )
            cached = os.path.join(base, "jax_cache")
            entries = len(os.listdir(cached)) if os.path.isdir(cached) else 0
            rows.append((run, f"{time.perf_counter() - start:.1f}", entries))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip_train_py", action="store_true")
    parser.add_argument("--size", choices=("bench", "realistic"), default="bench",
                        help="bench/train_vs_torch.py's sizes (SIZES) of the in-process part")
    parser.add_argument("--no_record", action="store_true")
    args = parser.parse_args()
    common.set_threads(args.threads)
    load_before = common.load_average()
    rows = in_process(args.size)
    total = sum(float(r[1]) - float(r[2]) for r in rows)
    from train_vs_torch import SIZES

    d_model, heads, mlp, layers, vocab, batch, length = SIZES[args.size]
    lines = [
        f"Transformer d_model {d_model}, {heads} heads, ff {mlp}, {layers}+{layers} layers, vocab "
        f"{vocab}, batch {batch}, lengths {length}/{length} (decoding max_len {length}). "
        "First call = trace + lower + compile + one run; compile phases from jax.monitoring.", "",
        *common.table(["function", "first call s", "later calls s", "trace s", "lower s",
                       "XLA compile s", "compiles", "compiles in 3 later calls"], rows),
        "", f"Compile overhead of train step + greedy + beam 4 (first call minus a later one): "
        f"{total:.1f} s.",
    ]
    if not args.skip_train_py:
        lines += [
            "", "`train.py`, reverse task with this Transformer, 2 train steps, final eval "
            "(validation + test, 2000 each); each run a new workdir under one parent:", "",
            *common.table(["run", "wall s", "cache entries after"], train_py_runs(args.threads)),
        ]
    command = f"PYTHONPATH=. python bench/compile_time.py {' '.join(sys.argv[1:])}".strip()
    section = [*common.machine_lines(args.threads, load_before), "", "```bash", command, "```", "", *lines]
    if args.no_record:
        print("\n".join(section))
    else:
        common.append_section("Compile time and the persistent cache (`bench/compile_time.py`)", section)


if __name__ == "__main__":
    main()
