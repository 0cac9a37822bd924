"""Memory of a train step at bart-base's size: rematerialised layers, LoRA and frozen embeddings.

    taskset -c 1 PYTHONPATH=. python bench/memory.py [--time_batch 1 --time_src 128 --time_tgt 32]
        [--windows 3] [--write]

The model is the Transformer in BART's layout (`flax_s2s.models.bart.BART_LAYOUT`) at bart-base's
size: d_model 768, 12 heads, feed-forward 3072, 6 + 6 layers, vocabulary 50265, 1024 positions
(139M parameters), random weights (no checkpoint is read), float32, AdamW. For each variant the
jitted `training.make_train_step` is lowered and compiled for batch 8 x 512 source / 128 target
tokens from the train state's shapes alone (nothing of that size is allocated) and XLA's own
account of the compiled step is read (`compiled.memory_analysis()`): the temporaries (the
activations kept for the backward pass, the gradients, the work buffers) and the arguments; the
parameters and optimizer state are counted from the state's shapes, and the values the loss
keeps from its forward pass for the backward pass (the residuals of `jax.vjp` with respect to
the trained parameters, as shapes: what a remat policy decides, before XLA schedules anything).

Variants: no remat; `model.remat="layer"` under each policy; LoRA rank 8 on the attention query
and value projections (every other parameter frozen); the token and position embeddings frozen.

Step time: a full step of that size takes minutes on this CPU, so each variant is timed at the
smaller batch `--time_batch` x `--time_src` / `--time_tgt` (real arrays, random tokens), in
alternating windows against the plain step (`common.compare`); read the ratio to plain.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/common.py

import common  # noqa: E402

common.set_threads(1)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import default  # noqa: E402
from flax_s2s import lora, training  # noqa: E402
from flax_s2s.forcing import TeacherForcing  # noqa: E402
from flax_s2s.models import Seq2Seq  # noqa: E402
from flax_s2s.models.bart import BART_LAYOUT, BART_SPECIAL_TOKENS  # noqa: E402
from flax_s2s.models.transformer import Transformer, TransformerConfig  # noqa: E402
from flax_s2s.training import frozen  # noqa: E402

VOCAB, POSITIONS = 50265, 1024
FULL = (8, 512, 128)  # batch, source tokens, target tokens
MIB = 2**20
# name -> config fields
VARIANTS = {
    "plain": {},
    "remat layer, nothing_saveable": {"model.remat": "layer",
                                      "model.remat_policy": "nothing_saveable"},
    "remat layer, dots_with_no_batch_dims_saveable": {
        "model.remat": "layer", "model.remat_policy": "dots_with_no_batch_dims_saveable"},
    "remat layer, dots_saveable": {"model.remat": "layer", "model.remat_policy": "dots_saveable"},
    "LoRA rank 8, q and v": {"lora.rank": 8, "lora.alpha": 16.0,
                             "lora.targets": (r"attention/(query|value)/kernel$",)},
    "frozen embeddings": {"frozen": (r"(embed|positions)/embedding$",)},
}


def _config(fields: dict, batch: int, src: int, tgt: int):
    config = default.get_config()
    config.model.type = "bart"
    config.batch_size, config.max_src_len, config.max_tgt_len = batch, src, tgt
    config.model.dropout_rate = 0.1
    config.optimizer.learning_rate = 1e-4
    for key, value in fields.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def _model(config) -> Seq2Seq:
    hyper = TransformerConfig(
        **BART_LAYOUT, src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, d_model=768, num_heads=12,
        mlp_dim=3072, num_encoder_layers=6, num_decoder_layers=6, max_positions=POSITIONS,
        dropout_rate=config.model.dropout_rate, special_tokens=BART_SPECIAL_TOKENS,
        attention="xla", remat=config.model.remat, remat_policy=config.model.remat_policy)
    return Seq2Seq(Transformer(hyper))


def _batch(batch: int, src: int, tgt: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"src_tokens": rng.integers(4, VOCAB, (batch, src)).astype(np.int32),
            "tgt_tokens": rng.integers(4, VOCAB, (batch, tgt)).astype(np.int32)}


def _parts(fields: dict, shape: tuple[int, int, int]):
    """(model, tx, config, jitted step, LoRA spec) of a variant at batch `shape`."""
    config = _config(fields, *shape)
    model, tx = _model(config), training.make_optimizer(config)
    step = jax.jit(training.make_train_step(model, tx, config))
    return model, tx, config, step, lora.LoraSpec.from_config(config)


def _nbytes(tree) -> int:
    return sum(int(np.prod(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize
               for leaf in jax.tree.leaves(tree))


def memory_row(name: str, fields: dict) -> list:
    """One row of the memory table: compiled for the full batch from shapes alone."""
    model, tx, config, step, spec = _parts(fields, FULL)
    batch = {"src_tokens": jax.ShapeDtypeStruct(FULL[:2], jnp.int32),
             "tgt_tokens": jax.ShapeDtypeStruct((FULL[0], FULL[2]), jnp.int32)}
    state = training.abstract_train_state(model, tx, config.seed, batch, lora_spec=spec)
    memory = step.lower(state, batch).compile().memory_analysis()
    trained = frozen.split(state.params, config)[0]
    kept = _nbytes(_residuals(model, config, state, batch))
    print(name, memory, kept, flush=True)
    return [name, f"{sum(int(np.prod(x.shape)) for x in jax.tree.leaves(trained)) / 1e6:.2f}M",
            f"{_nbytes(state.params) / MIB:.0f}", f"{_nbytes(state.opt_state) / MIB:.0f}",
            f"{kept / MIB:.0f}", f"{memory.argument_size_in_bytes / MIB:.0f}",
            f"{memory.temp_size_in_bytes / MIB:.0f}"]


def _residuals(model, config, state, batch):
    """The values the step's loss keeps from its forward pass for its backward pass (the
    residuals of `jax.vjp` with respect to the trained parameters), as shapes: what remat's
    policy decides, whatever XLA's scheduler then makes of it."""
    forcing = TeacherForcing.from_config(config.teacher_forcing)
    batch_sums = training.make_batch_sums(model, forcing, config)

    def vjp_function(params, batch):
        trained, fixed = frozen.split(params, config)

        def loss(trained):
            merged = lora.merged(frozen.join(trained, fixed))
            return batch_sums(merged, {}, batch, jax.random.PRNGKey(0), jnp.int32(0))[0]

        return jax.vjp(loss, trained)[1]

    return jax.eval_shape(vjp_function, state.params, batch)


def step_times(shape: tuple[int, int, int], windows: int) -> tuple[dict[str, float], list[float]]:
    """({variant: its seconds per step / the plain step's}, the plain step's seconds in each
    comparison) at `shape`, each variant timed against the plain step."""
    batch = _batch(*shape)
    plain = _parts({}, shape)
    plain_state = training.create_train_state(plain[0], plain[1], 0, batch)
    times, plain_seconds = {}, []
    for name, fields in VARIANTS.items():
        if name == "plain":
            continue
        model, tx, config, step, spec = _parts(fields, shape)
        same_state = not spec and not config.frozen
        state = plain_state if same_state else training.create_train_state(
            model, tx, 0, batch, lora_spec=spec)

        def run(step=step, state=state):
            jax.block_until_ready(step(state, batch)[1]["loss"])

        def run_plain():
            jax.block_until_ready(plain[3](plain_state, batch)[1]["loss"])

        medians = common.compare({"plain": run_plain, name: run}, warmup=1, windows=windows,
                                 repeats=1)
        times[name] = medians[name] / medians["plain"]
        plain_seconds.append(medians["plain"])
        print(name, medians, flush=True)
        del state
    return times, plain_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time_batch", type=int, default=1)
    parser.add_argument("--time_src", type=int, default=128)
    parser.add_argument("--time_tgt", type=int, default=32)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--parts", default="memory,time", help="memory, time or both")
    parser.add_argument("--write", action="store_true", help="append the section to RESULTS.md")
    args = parser.parse_args()
    load_before = common.load_average()
    rows = [memory_row(name, fields) if "memory" in args.parts else [name, *["-"] * 6]
            for name, fields in VARIANTS.items()]
    shape = (args.time_batch, args.time_src, args.time_tgt)
    times, plain_seconds = step_times(shape, args.windows) if "time" in args.parts else ({}, [0.0])
    plain_seconds = float(np.median(plain_seconds))
    for row in rows:
        row.append("1.00" if row[0] == "plain" else f"{times.get(row[0], float('nan')):.2f}")
    lines = [
        *common.machine_lines(1, load_before),
        "",
        "```bash",
        "taskset -c N env PYTHONPATH=. python bench/memory.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        f"Train step of the Transformer in BART's layout at bart-base's size (139M parameters, "
        f"random weights), float32, AdamW; memory compiled for batch {FULL[0]} x {FULL[1]} "
        f"source / {FULL[2]} target tokens (XLA:CPU's `memory_analysis`, nothing allocated); "
        f"step time at batch {shape[0]} x {shape[1]} / {shape[2]}, median of {args.windows} "
        f"alternating windows against the plain step (plain: {plain_seconds:.2f} s/step):",
        "",
        *common.table(["variant", "trained parameters", "parameters MiB", "optimizer state MiB",
                       "kept for backward MiB", "XLA arguments MiB", "XLA temporaries MiB",
                       "step time x plain"], rows),
    ]
    print("\n".join(lines))
    if args.write:
        common.append_section("Memory at bart-base's size: remat, LoRA, frozen embeddings "
                              "(`bench/memory.py`)", lines)


if __name__ == "__main__":
    main()
