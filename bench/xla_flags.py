"""XLA:CPU flags against the default, on the Transformer train step of bench/train_vs_torch.py.

    taskset -c 0 python bench/xla_flags.py [--rounds 3] [--steps 8] [--variant NAME=FLAGS ...]

Flags are read once per process, so each variant runs in a process of its own (inheriting this
one's pinning), and the variants take turns for `--rounds` rounds (A, B, C, A, B, C, ...) so a
change of the machine's load spreads over all of them. Each process prints the median of
`--steps` steps after 2 warm-up steps; the table gives the median over rounds and the ratio to the
default. Default variants: the vector width of XLA's own loops (512 bits, where the CPU has
AVX-512), dots without YNNPACK (Eigen's), YNNPACK fusions of elementwise and reduce work too, and
dots on oneDNN. A variant whose process fails is reported with how it failed (a signal, an exit
code) and its last line of stderr, and not run again.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

import common

VARIANTS = {
    "default": "",
    "512-bit vectors": "--xla_cpu_prefer_vector_width=512",
    "no YNNPACK (Eigen dots)": "--xla_cpu_experimental_ynn_fusion_type=",
    "YNNPACK eltwise + reduce too": "--xla_cpu_experimental_ynn_fusion_type=+eltwise,+reduce",
    # jaxlib carries oneDNN; these flags send the dots to it instead of YNNPACK. On jaxlib 0.10.2
    # the train step's compile fails and the process dies (SIGILL): reported as such.
    "oneDNN dots": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot "
                   "--xla_cpu_experimental_ynn_fusion_type=",
}


def one_process(steps: int) -> None:
    """Runs in the child: prints the median seconds of `steps` train steps."""
    common.set_threads(1)  # appends to the variant's XLA_FLAGS
    import time

    from train_vs_torch import VOCAB, batch_arrays, jax_step_fn, transformer_config

    run = jax_step_fn(transformer_config(), VOCAB, batch_arrays(64, 24, 24, VOCAB))
    for _ in range(2):
        run()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    print(statistics.median(seconds))


def _failure(run: subprocess.CompletedProcess) -> str:
    """How a variant's process failed: the signal that killed it, or its exit code, and the last
    line it wrote to stderr."""
    import signal

    code = run.returncode
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    last = (run.stderr.strip().splitlines() or [""])[-1][:80]
    return f"failed: {how}" + (f" ({last})" if last else "")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--variant", action="append", default=[], help="NAME=FLAGS (repeatable)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no_record", action="store_true")
    args = parser.parse_args()
    if args.child:
        one_process(args.steps)
        return
    variants = dict(VARIANTS)
    variants.update(dict(v.split("=", 1) for v in args.variant))
    load_before = common.load_average()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    failed: dict[str, str] = {}
    for _ in range(args.rounds):
        for name, flags in variants.items():
            if name in failed:
                continue
            env = {**os.environ, "XLA_FLAGS": flags}
            run = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", f"--steps={args.steps}"],
                env=env, capture_output=True, text=True,
            )
            if run.returncode == 0:
                seconds[name].append(float(run.stdout.split()[-1]))
            else:
                failed[name] = _failure(run)
    base = statistics.median(seconds["default"]) if seconds["default"] else None
    rows = [(name, f"`{variants[name] or '(none)'}`",
             *((failed[name], "-") if name in failed else
               (f"{statistics.median(s) * 1e3:.0f}",
                f"{base / statistics.median(s):.2f}" if base else "-")))
            for name, s in seconds.items()]
    command = f"taskset -c 0 python bench/xla_flags.py {' '.join(sys.argv[1:])}".strip()
    section = [*common.machine_lines(1, load_before), "", "```bash", command, "```", "",
               "Transformer train step of bench/train_vs_torch.py, one process per variant and "
               f"round, {args.rounds} rounds, median of {args.steps} steps each.", "",
               *common.table(["variant", "XLA_FLAGS", "ms/step", "speed-up"], rows)]
    if args.no_record:
        print("\n".join(section))
    else:
        common.append_section("XLA:CPU flags on the train step (`bench/xla_flags.py`)", section)


if __name__ == "__main__":
    main()
