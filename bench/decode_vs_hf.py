"""Decoding speed of flax_s2s against Hugging Face `generate`, side by side in one process.

    PYTHONPATH=. python bench/decode_vs_hf.py [--threads 1]

The Transformer of bench/train_vs_torch.py (d_model 256, 4 heads, ff 1024, 3+3 layers, vocab 64)
against a randomly initialised BART of the same size (built from a BartConfig: no weights are
fetched), greedy and beam 4, at batch 64 (sentences/s) and batch 1 (latency), 24 source tokens,
24 output tokens. Both sides emit exactly 24 tokens per sequence, so the work is the same: HF
with min_new_tokens = max_new_tokens = 24 (EOS suppressed), flax_s2s with the output bias of EOS
at -1e9 (checked: every returned length is 24). Needs the `bench` extra (torch, transformers).
"""

from __future__ import annotations

import argparse
import sys

import common

VOCAB, MAX_LEN, BEAM = 64, 24, 4


def full_length_inputs(model, batch: int):
    """(variables, src [batch, 24]) for `model`, whose outputs never end early: the output bias of
    EOS is -1e9, so every decoded sequence has MAX_LEN tokens."""
    import flax
    import jax
    from train_vs_torch import batch_arrays

    from flax_s2s.data.vocab import EOS

    arrays = batch_arrays(batch, 24, MAX_LEN, VOCAB)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), arrays["src_tokens"], arrays["tgt_tokens"])
    flat = flax.traverse_util.flatten_dict(variables)
    bias = next(k for k in flat if "output_proj" in k and k[-1] == "bias")
    flat[bias] = flat[bias].at[EOS].set(-1e9)  # never end early: full-length outputs
    return flax.traverse_util.unflatten_dict(flat), jax.device_put(arrays["src_tokens"])


def flax_side(batch: int):
    """{"greedy": fn, "beam 4": fn} running flax_s2s decoding on a [batch, 24] source."""
    import jax
    import numpy as np
    from train_vs_torch import transformer_config

    from flax_s2s import decoding
    from flax_s2s.models import build_model

    config = transformer_config()
    model = build_model(config, VOCAB, VOCAB)
    variables, src = full_length_inputs(model, batch)

    def check(lengths):
        lengths = np.asarray(lengths)
        if not (lengths == MAX_LEN).all():
            raise AssertionError(f"flax_s2s emitted fewer than {MAX_LEN} tokens: {lengths}")

    check(decoding.greedy(model, variables, src, MAX_LEN)[1])
    check(decoding.beam_search(model, variables, src, BEAM, MAX_LEN)[1])
    return {
        "greedy": lambda: jax.block_until_ready(decoding.greedy(model, variables, src, MAX_LEN)),
        "beam 4": lambda: jax.block_until_ready(
            decoding.beam_search(model, variables, src, BEAM, MAX_LEN)
        ),
    }


def hf_side(batch: int):
    import torch
    from train_vs_torch import batch_arrays
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(
        vocab_size=VOCAB, d_model=256, encoder_layers=3, decoder_layers=3,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=1024,
        decoder_ffn_dim=1024, max_position_embeddings=64, dropout=0.0, attention_dropout=0.0,
        activation_function="relu", pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1, forced_bos_token_id=None, forced_eos_token_id=None,
    )
    torch.manual_seed(0)
    model = BartForConditionalGeneration(config).eval()
    src = torch.from_numpy(batch_arrays(batch, 24, MAX_LEN, VOCAB)["src_tokens"]).long()
    mask = torch.ones_like(src)

    def generate(beams: int):
        with torch.inference_mode():
            return model.generate(
                input_ids=src, attention_mask=mask, num_beams=beams, do_sample=False,
                max_new_tokens=MAX_LEN, min_new_tokens=MAX_LEN, use_cache=True,
            )

    for beams in (1, BEAM):
        out = generate(beams)
        if out.shape[1] != MAX_LEN + 1:  # the decoder start token + 24
            raise AssertionError(f"HF generate returned {out.shape[1] - 1} tokens, not {MAX_LEN}")
    return {"greedy": lambda: generate(1), "beam 4": lambda: generate(BEAM)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--no_record", action="store_true")
    args = parser.parse_args()
    common.set_threads(args.threads)
    load_before = common.load_average()
    rows = []
    for batch, repeats in ((64, 1), (1, 10)):
        ours, theirs = flax_side(batch), hf_side(batch)
        for search in ("greedy", "beam 4"):
            times = common.compare(
                {"flax_s2s": ours[search], "HF generate": theirs[search]},
                warmup=2, windows=args.windows, repeats=repeats,
            )
            fast, slow = times["flax_s2s"], times["HF generate"]
            rows.append((batch, search, f"{fast * 1e3:.1f}", f"{slow * 1e3:.1f}",
                         f"{batch / fast:.1f}", f"{batch / slow:.1f}", f"{slow / fast:.2f}"))
    command = f"PYTHONPATH=. python bench/decode_vs_hf.py {' '.join(sys.argv[1:])}".strip()
    section = [
        *common.machine_lines(args.threads, load_before), "", "```bash", command, "```", "",
        "Transformer d_model 256, 4 heads, ff 1024, 3+3 layers, vocab 64; source 24 tokens, "
        f"exactly {MAX_LEN} output tokens per sequence on both sides (KV cache on both); "
        "HF = BartForConditionalGeneration from a BartConfig, random init.", "",
        *common.table(["batch", "search", "flax_s2s ms", "HF ms", "flax_s2s sent/s", "HF sent/s",
                       "speed-up"], rows),
        "", f"Median of {args.windows} alternating windows after 2 warm-up calls "
        "(batch 1: 10 calls per window).",
    ]
    if args.no_record:
        print("\n".join(section))
    else:
        common.append_section("Decoding against Hugging Face generate (`bench/decode_vs_hf.py`)", section)


if __name__ == "__main__":
    main()
