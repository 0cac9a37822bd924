"""Where the teacher-forced Transformer train step spends its time: forward + loss, forward +
backward, and the whole step (clipping, AdamW, the non-finite guard), timed alternately.

    PYTHONPATH=. python bench/profile_step.py [--threads 1] [--trace DIR]

`--trace DIR` also writes a jax.profiler trace of 3 steps (open it with TensorBoard's profile
plugin or Perfetto) and tabulates the step's time by kind of XLA op (YNNPACK fusions, plain dots,
copies and transposes, ...), read from the trace's events; with `--ops N`, also the N longest ops,
each with its instruction in the compiled step's HLO (`step.lower(...).compile().as_text()`: the
result shape, dot dimensions, the JAX op it came from). Appends its tables to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys

import common


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--trace", default="")
    parser.add_argument("--ops", type=int, default=0, help="with --trace: list the N longest ops")
    parser.add_argument("--no_record", action="store_true")
    args = parser.parse_args()
    common.set_threads(args.threads)
    load_before = common.load_average()

    import jax
    from train_vs_torch import VOCAB, batch_arrays, transformer_config

    from flax_s2s import metrics, training
    from flax_s2s.models import build_model, decoder_inputs

    config = transformer_config()
    model = build_model(config, VOCAB, VOCAB)
    tx = training.make_optimizer(config)
    batch = jax.device_put(batch_arrays(64, 24, 24, VOCAB))
    state = [training.create_train_state(model, tx, config.seed, batch)]

    def loss_fn(params):
        variables = {"params": params}
        encoded = model.encode(variables, batch["src_tokens"], train=True)
        logits = model.forward(variables, encoded, decoder_inputs(batch["tgt_tokens"]), train=True)
        weights = metrics.token_weights(batch["tgt_tokens"])
        return metrics.cross_entropy_sum(logits, batch["tgt_tokens"], weights) / weights.sum()

    forward = jax.jit(loss_fn)
    grad = jax.jit(jax.value_and_grad(loss_fn))
    step = jax.jit(training.make_train_step(model, tx, config), donate_argnums=0)
    params = jax.tree.map(jax.numpy.copy, state[0].params)  # the train step donates its state

    def full_step():
        state[0], step_metrics = step(state[0], batch)
        jax.block_until_ready(step_metrics)

    sides = {
        "forward + loss": lambda: jax.block_until_ready(forward(params)),
        "forward + backward": lambda: jax.block_until_ready(grad(params)),
        "train step": full_step,
    }
    times = common.compare(sides, windows=args.windows, repeats=2)
    op_rows = []
    if args.trace:
        with jax.profiler.trace(args.trace, create_perfetto_trace=True):
            for _ in range(3):
                full_step()
        op_rows = [(kind, f"{ms:.1f}", f"{ms / 1e3 / times['train step']:.2f}")
                   for kind, ms in op_kinds(args.trace, steps=3)[:12]]
        if args.ops:
            hlo = step.lower(state[0], batch).compile().as_text()
            for name, ms in op_times(args.trace, steps=3).most_common(args.ops):
                print(f"{ms:8.2f} ms  {name:28s} {hlo_instruction(hlo, name)}")
    fwd, bwd, whole = times["forward + loss"], times["forward + backward"], times["train step"]
    rows = [("forward + loss", f"{fwd * 1e3:.0f}", f"{fwd / whole:.2f}"),
            ("backward (difference)", f"{(bwd - fwd) * 1e3:.0f}", f"{(bwd - fwd) / whole:.2f}"),
            ("optimizer, clipping, guard (difference)", f"{(whole - bwd) * 1e3:.0f}",
             f"{(whole - bwd) / whole:.2f}"),
            ("train step", f"{whole * 1e3:.0f}", "1.00")]
    command = f"PYTHONPATH=. python bench/profile_step.py {' '.join(sys.argv[1:])}".strip()
    section = [*common.machine_lines(args.threads, load_before), "", "```bash", command, "```", "",
               "Transformer of bench/train_vs_torch.py, teacher forced; the backward's share is "
               "forward + backward minus forward (forward ~1/3 of the FLOPs, backward ~2/3).", "",
               *common.table(["part", "ms", "share of the step"], rows)]
    if op_rows:
        section += ["", "Time by kind of XLA op (trace of 3 steps, events of one name with its "
                    "number stripped):", "",
                    *common.table(["op kind", "ms/step", "share of the step"], op_rows)]
    if args.no_record:
        print("\n".join(section))
    else:
        common.append_section("Train step breakdown (`bench/profile_step.py`)", section)


def op_kinds(trace_dir: str, steps: int) -> list[tuple[str, float]]:
    """(op kind, ms per step) from the perfetto trace under `trace_dir`, longest first: the XLA
    thunks' events grouped by name less its number (`dot.12`, `ynn_fusion.3` -> `dot`, ...)."""
    import collections
    import re

    total: collections.Counter = collections.Counter()
    for name, ms in op_times(trace_dir, steps).items():
        total[re.sub(r"[._]\d+$", "", name)] += ms
    return total.most_common()


def op_times(trace_dir: str, steps: int):
    """Counter of ms per step by XLA op name (`dot.12`) from the perfetto trace under `trace_dir`."""
    import collections
    import glob
    import gzip
    import json
    import os
    import re

    path = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[0]
    events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    total: collections.Counter = collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("ph") == "X" and re.fullmatch(r"[a-z_]+[._]\d+", name):
            total[name] += event["dur"] / 1e3 / steps
    return total


def hlo_instruction(hlo: str, name: str) -> str:
    """The compiled HLO's instruction `name`, shortened: result shape, op and operands, dot
    dimensions, and the JAX op it came from (`op_name`)."""
    import re

    match = re.search(rf"^\s*(?:ROOT )?%{re.escape(name)} = (.*)$", hlo, re.MULTILINE)
    if not match:
        return "?"
    line = match.group(1)
    origin = re.search(r'op_name="([^"]*)"', line)
    line = re.sub(r", (metadata|backend_config|calls)=.*", "", line)
    return line[:160] + (f"  <- {origin.group(1)[-90:]}" if origin else "")


if __name__ == "__main__":
    main()
