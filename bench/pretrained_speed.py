"""A t5-small-sized T5 against the same-size flax_s2s Transformer: train step time, target
tokens/s and memory on this machine, and (with the bench extra) the export round trip through
Hugging Face `transformers`.

    taskset -c 0 python bench/pretrained_speed.py [--batch 16 --length 64] [--no_record]

Part "speed": both models randomly initialised (a tiny random T5 cannot show transfer; what can
be measured here is the cost): T5 from `T5Config()` (t5-small's shape: d_model 512, 8 heads of
64, d_ff 2048, 6 + 6 layers, vocabulary 32128, tied and rescaled output) and the Transformer of
the same widths (pre-LayerNorm, sinusoidal positions, shared tied embedding). One jitted
`training.make_train_step` each, timed in alternating windows (`common.compare`), teacher forced,
dropout 0.1. Memory: XLA's own account of the compiled step (`memory_analysis`: arguments,
outputs, temporaries) and the parameter count.

Part "export" (needs torch and transformers): the tiny fixtures of tests/fixtures loaded,
every weight perturbed, exported with `flax_s2s.pretrained.export_pretrained`, loaded with
`AutoModelForSeq2SeqLM.from_pretrained` and its logits compared with flax_s2s's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402  (set_threads before jax)

common.set_threads(1)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import default  # noqa: E402
from flax_s2s import training  # noqa: E402
from flax_s2s.models import Seq2Seq, build_model  # noqa: E402
from flax_s2s.models.t5 import T5, T5Config  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")
T5_SMALL = T5Config()  # its defaults are t5-small's


def _config(length: int, batch: int):
    config = default.get_config()
    config.batch_size = batch
    config.max_src_len = config.max_tgt_len = length
    config.optimizer.warmup_steps = 10
    return config


def _transformer(config) -> Seq2Seq:
    c = T5_SMALL
    model = config.model
    model.type, model.norm, model.norm_position = "transformer", "layer", "pre"
    model.d_model, model.num_heads, model.mlp_dim = c.d_model, c.num_heads, c.d_ff
    model.num_encoder_layers, model.num_decoder_layers = c.num_encoder_layers, c.num_decoder_layers
    model.share_embeddings, model.tie_output, model.dropout_rate = True, True, c.dropout_rate
    return build_model(config, c.vocab_size, c.vocab_size)


def _step(model: Seq2Seq, config, batch: dict[str, np.ndarray]):
    """(a call that runs one step and blocks, parameter count, memory MiB by XLA's account)."""
    tx = training.make_optimizer(config)
    state = training.create_train_state(model, tx, config.seed, batch)
    step = jax.jit(training.make_train_step(model, tx, config))
    compiled = step.lower(state, batch).compile()
    memory = compiled.memory_analysis()
    mib = {"arguments": memory.argument_size_in_bytes / 2**20,
           "temporaries": memory.temp_size_in_bytes / 2**20,
           "outputs": memory.output_size_in_bytes / 2**20}
    params = sum(leaf.size for leaf in jax.tree.leaves(state.params))
    holder = {"state": state}

    def run() -> None:
        holder["state"], metrics = compiled(holder["state"], batch)
        jax.block_until_ready(metrics["loss"])

    return run, params, mib


def speed(batch_size: int, length: int, windows: int) -> list[str]:
    config = _config(length, batch_size)
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, T5_SMALL.vocab_size, (batch_size, length)).astype(np.int32)
    tokens[:, -1] = 1  # eos last: full-length rows, no padding
    batch = {"src_tokens": tokens, "tgt_tokens": tokens.copy()}
    sides, sizes = {}, {}
    for name, model in (("T5 (t5-small shape)", Seq2Seq(T5(T5_SMALL))),
                        ("flax_s2s Transformer", _transformer(config))):
        run, params, mib = _step(model, config, batch)
        sides[name], sizes[name] = run, (params, mib)
    seconds = common.compare(sides, warmup=1, windows=windows, repeats=1)
    base = seconds["flax_s2s Transformer"]
    rows = []
    for name, s in seconds.items():
        params, mib = sizes[name]
        rows.append([name, f"{params / 1e6:.1f}M", f"{s * 1e3:.0f}", f"{batch_size * length / s:.0f}",
                     f"{1 / s:.3f}", f"{mib['arguments']:.0f}", f"{mib['temporaries']:.0f}",
                     f"{base / s:.2f}"])
    return common.table(["model", "parameters", "ms/step", "target tokens/s", "steps/s",
                         "arguments MiB", "temporaries MiB", "x Transformer"], rows)


def export_round_trip() -> list[str]:
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from flax_s2s.pretrained import export_pretrained, load_pretrained

    rows = []
    for variant in ("t5_v1_0", "t5_v1_1", "bart"):
        directory = os.path.join(FIXTURES, variant)
        model, variables = load_pretrained(directory)
        leaves, treedef = jax.tree.flatten(variables)
        keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
        changed = jax.tree.unflatten(treedef, [leaf + 0.1 * jax.random.normal(key, leaf.shape)
                                               for leaf, key in zip(leaves, keys, strict=True)])
        out = os.path.join(tempfile.mkdtemp(), variant)
        export_pretrained(changed, directory, out)
        reference = np.load(os.path.join(directory, "reference.npz"))
        ours = model.forward(changed, model.encode(changed, jnp.asarray(reference["src"])),
                             jnp.asarray(reference["tgt_inputs"]))
        hf = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
        src = torch.tensor(reference["src"].astype(np.int64))
        with torch.no_grad():
            theirs = hf(input_ids=src, attention_mask=src != hf.config.pad_token_id,
                        decoder_input_ids=torch.tensor(reference["tgt_inputs"].astype(np.int64))).logits
        rows.append([variant, f"{np.abs(theirs.numpy() - np.asarray(ours)).max():.1e}",
                     f"{np.abs(reference['logits'] - np.asarray(ours)).max():.1f}"])
    return common.table(["fixture", "max |transformers - flax_s2s| logits, exported weights",
                         "max |change| from the original logits"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64, help="source and target tokens per row")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--parts", default="speed,export")
    parser.add_argument("--no_record", action="store_true", help="print only; RESULTS.md untouched")
    args = parser.parse_args()
    load = common.load_average()
    lines = []
    if "speed" in args.parts:
        lines += [f"Train step, batch {args.batch} x {args.length} source and {args.length} target "
                  f"tokens, median of {args.windows} alternating windows:", "",
                  *speed(args.batch, args.length, args.windows), ""]
    if "export" in args.parts:
        lines += ["Export round trip (every weight perturbed by 0.1 N(0, 1), exported, loaded in "
                  "transformers):", "", *export_round_trip(), ""]
    header = [*common.machine_lines(1, load), "", "```bash",
              f"PYTHONPATH=. python bench/pretrained_speed.py --batch {args.batch} --length "
              f"{args.length} --parts {args.parts}", "```", ""]
    text = [*header, *lines]
    if args.no_record:
        print("\n".join(text))
    else:
        common.append_section("Pretrained T5 at t5-small's size against the Transformer "
                              "(`bench/pretrained_speed.py`)", text)


if __name__ == "__main__":
    main()
