"""Decoding speed at a realistic size: flax_s2s against Hugging Face `generate` and CTranslate2,
the same weights on every side, side by side in one process.

    taskset -c 0 python bench/decode_realistic.py [--shape bart|t5] [--batches 1,8,64]
        [--searches greedy,beam] [--windows 2] [--dtype float32|bfloat16] [--no_record]

--shape bart: a BART of d_model 512, 8 heads, ff 2048, 6 + 6 layers, a 16k vocabulary (about
60M parameters); --shape t5: t5-small's shape (`T5Config()`: d_model 512, 8 heads, ff 2048,
6 + 6 layers, 32128 tokens). Random weights (torch seed 0), written once with `save_pretrained`
(plus a word-level tokenizer naming every id, which CTranslate2's converter reads); flax_s2s loads
that directory with `flax_s2s.pretrained.load_pretrained`, Hugging Face with `from_pretrained`,
CTranslate2 4.x from `TransformersConverter`'s conversion of it. Every side in float32, or with
--dtype bfloat16 in bfloat16 (weights and compute; CTranslate2's compute_type). 32 source tokens
(random ids, EOS last), exactly 32 output tokens on every side: EOS is forbidden until the
length limit (flax_s2s min_len = max_len = 32, HF min_new_tokens = max_new_tokens = 32,
CTranslate2 min_decoding_length = max_decoding_length = 32), checked on every side's output.
Greedy and beam 4 (length penalty 1 on both peers; all hypotheses have 32 tokens), batch 1, 8
and 64, one thread everywhere (CTranslate2 intra_threads = inter_threads = 1). Needs the `bench`
extra (torch, transformers, ctranslate2).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402  (set_threads before jax and torch)

LENGTH, BEAM = 32, 4
CT2_TYPE: set[str] = set()  # the compute types CTranslate2 ran in
SHAPES = {
    "bart": "BART d_model 512, 8 heads, ff 2048, 6+6 layers, vocabulary 16000 (gelu, post-norm, "
            "tied output + final_logits_bias)",
    "t5": "t5-small shape: d_model 512, 8 heads, ff 2048, 6+6 layers, vocabulary 32128 "
          "(T5Config() defaults)",
}
# (pad, eos, unk, bos) ids and names of each shape's special tokens
SPECIALS = {"bart": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3},
            "t5": {"<pad>": 0, "</s>": 1, "<unk>": 2}}


def hf_model(shape: str):
    """The randomly initialised transformers model of `shape` (torch seed 0), in eval mode."""
    import torch
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        T5Config,
        T5ForConditionalGeneration,
    )

    torch.manual_seed(0)
    if shape == "t5":
        config = T5Config(dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
        return T5ForConditionalGeneration(config).eval()
    config = BartConfig(
        vocab_size=16000, d_model=512, encoder_layers=6, decoder_layers=6,
        encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048,
        decoder_ffn_dim=2048, max_position_embeddings=128, dropout=0.0, attention_dropout=0.0,
        activation_function="gelu", pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2, forced_bos_token_id=None, forced_eos_token_id=None,
        normalize_before=False,  # CTranslate2's converter reads it; transformers 5 dropped it
    )
    return BartForConditionalGeneration(config).eval()


def word_tokenizer(vocab_size: int, specials: dict[str, int]):
    """A word-level tokenizer whose token of id i is its special name or `t{i}`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    names = {i: name for name, i in specials.items()}
    vocab = {names.get(i, f"t{i}"): i for i in range(vocab_size)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    roles = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    if "<s>" in specials:
        roles["bos_token"] = "<s>"
    return PreTrainedTokenizerFast(tokenizer_object=core, **roles)


def write_model(shape: str, directory: str) -> tuple[object, str]:
    """(the transformers model, CTranslate2's directory): the model saved to `directory` with its
    tokenizer, and converted by CTranslate2 into `directory`/ct2."""
    import ctranslate2

    model = hf_model(shape)
    model.save_pretrained(directory)
    word_tokenizer(model.config.vocab_size, SPECIALS[shape]).save_pretrained(directory)
    out = os.path.join(directory, "ct2")
    ctranslate2.converters.TransformersConverter(directory).convert(out, force=True)
    return model, out


def sources(batch: int, vocab: int, eos: int):
    """[batch, 32] int32 random ids above the specials, EOS last (NumPy seed 0)."""
    import numpy as np

    src = np.random.default_rng(0).integers(4, vocab, (batch, LENGTH)).astype(np.int32)
    src[:, -1] = eos
    return src


def check(side: str, lengths) -> None:
    import numpy as np

    lengths = np.asarray(lengths)
    if not (lengths == LENGTH).all():
        raise AssertionError(f"{side} emitted other than {LENGTH} tokens: {sorted(set(lengths.ravel()))}")


def flax_side(directory: str, src, dtype: str):
    """{"greedy": call, "beam 4": call} of flax_s2s on `src`, from `load_pretrained` (bfloat16:
    computing in bfloat16, the weights cast to it once)."""
    import jax
    import jax.numpy as jnp

    from flax_s2s import decoding
    from flax_s2s.pretrained import load_pretrained

    if dtype == "float32":
        model, variables = load_pretrained(directory)
    else:
        model, variables = load_pretrained(directory, dtype=jnp.bfloat16)
        variables = jax.tree.map(lambda x: x.astype(jnp.bfloat16), variables)
    src = jax.device_put(src)
    calls = {
        "greedy": lambda: decoding.greedy(model, variables, src, LENGTH, min_len=LENGTH),
        "beam 4": lambda: decoding.beam_search(model, variables, src, BEAM, LENGTH, min_len=LENGTH),
    }
    for fn in calls.values():
        check("flax_s2s", fn()[1])
    return {name: (lambda fn=fn: jax.block_until_ready(fn())) for name, fn in calls.items()}


def hf_side(model, src, dtype: str):
    import torch

    model = model.to(getattr(torch, dtype))
    src = torch.from_numpy(src).long()
    mask = torch.ones_like(src)

    def generate(beams: int):
        with torch.inference_mode():
            return model.generate(
                input_ids=src, attention_mask=mask, num_beams=beams, do_sample=False,
                max_new_tokens=LENGTH, min_new_tokens=LENGTH, use_cache=True, length_penalty=1.0,
            )

    for beams in (1, BEAM):  # the decoder start token + 32
        check("HF generate", [generate(beams).shape[1] - 1])
    return {"greedy": lambda: generate(1), "beam 4": lambda: generate(BEAM)}


def ct2_side(directory: str, src, tokenizer_names: list[str], compute_type: str):
    """CTranslate2's calls in `compute_type`, or in float32 where its CPU build refuses it (its
    CPU backend may have no bfloat16 kernels): see CT2_TYPE."""
    import ctranslate2

    try:
        translator = ctranslate2.Translator(directory, device="cpu", compute_type=compute_type,
                                            intra_threads=1, inter_threads=1)
    except ValueError:
        compute_type = "float32"
        translator = ctranslate2.Translator(directory, device="cpu", compute_type=compute_type,
                                            intra_threads=1, inter_threads=1)
    CT2_TYPE.add(compute_type)
    tokens = [[tokenizer_names[i] for i in row] for row in src]

    def translate(beams: int):
        return translator.translate_batch(tokens, beam_size=beams, max_decoding_length=LENGTH,
                                          min_decoding_length=LENGTH, length_penalty=1.0)

    for beams in (1, BEAM):
        check("CTranslate2", [len(r.hypotheses[0]) for r in translate(beams)])
    return {"greedy": lambda: translate(1), "beam 4": lambda: translate(BEAM)}


def measure(shape: str, batches: list[int], searches: list[str], windows: int,
            dtype: str) -> list[list[str]]:
    """One row per (batch, search): the three sides' medians (ms) and the ratios."""
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        model, ct2_dir = write_model(shape, directory)
        specials = SPECIALS[shape]
        names = [{i: n for n, i in specials.items()}.get(i, f"t{i}")
                 for i in range(model.config.vocab_size)]
        for batch in batches:
            src = sources(batch, model.config.vocab_size, specials["</s>"])
            sides = {"flax_s2s": flax_side(directory, src, dtype), "HF": hf_side(model, src, dtype),
                     "CTranslate2": ct2_side(ct2_dir, src, names, dtype)}
            for search in searches:
                times = common.compare({name: calls[search] for name, calls in sides.items()},
                                       warmup=1, windows=windows, repeats=3 if batch == 1 else 1)
                ours = times["flax_s2s"]
                rows.append([str(batch), search, *(f"{times[n] * 1e3:.0f}" for n in sides),
                             f"{times['HF'] / ours:.2f}", f"{times['CTranslate2'] / ours:.2f}"])
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="bart")
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--searches", default="greedy,beam")
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="every side's weights and compute (CTranslate2's compute_type)")
    parser.add_argument("--no_record", action="store_true")
    args = parser.parse_args()
    common.set_threads(1)
    load_before = common.load_average()
    searches = [{"greedy": "greedy", "beam": "beam 4"}[s] for s in args.searches.split(",")]
    rows = measure(args.shape, [int(b) for b in args.batches.split(",")], searches, args.windows,
                   args.dtype)
    command = f"taskset -c 0 python bench/decode_realistic.py {' '.join(sys.argv[1:])}".strip()
    section = [
        *common.machine_lines(1, load_before),
        f"- CTranslate2 {__import__('ctranslate2').__version__}, intra_threads 1; flax_s2s and HF in "
        f"{args.dtype} (weights and compute), CTranslate2 in {', '.join(sorted(CT2_TYPE))}",
        "", "```bash", command, "```", "",
        f"{SHAPES[args.shape]}; random weights, one save_pretrained directory for all three; "
        f"source {LENGTH} tokens, exactly {LENGTH} output tokens on every side (checked).", "",
        *common.table(["batch", "search", "flax_s2s ms", "HF ms", "CTranslate2 ms",
                       "x HF", "x CTranslate2"], rows),
        "", f"Median of {args.windows} alternating windows after 1 warm-up call (batch 1: 3 "
        "calls per window); x = peer time / flax_s2s time (above 1: flax_s2s faster).",
    ]
    if args.no_record:
        print("\n".join(section))
    else:
        common.append_section(f"Decoding at a realistic size, {args.shape}, {args.dtype} "
                              "(`bench/decode_realistic.py`)", section)


if __name__ == "__main__":
    main()
