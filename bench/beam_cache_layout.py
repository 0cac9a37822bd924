"""Beam search with the Transformer's cross-attention keys and values in `encoded` (as shipped)
against the same model with them in the decoder cache (the layout before), in one process.

    python bench/beam_cache_layout.py [--threads 1] [--batches 64 8 1]

Beam search reorders every cache leaf by beam at every step; the cross-attention keys and values
belong to the input, so the shipped Transformer returns them from `encode`, which beam search
tiles once. `CacheLayout` wraps the shipped model and moves them back into the cache, so the
only difference between the two sides is what is reordered (their hypotheses are checked equal).
The model is the Transformer of bench/decode_vs_hf.py (d_model 256, 4 heads, ff 1024, 3+3
layers, vocab 64), 24 source tokens, exactly 24 output tokens (EOS's output bias at -1e9), beam 4.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

@dataclasses.dataclass(frozen=True)
class CacheLayout:
    """The seam of `model` with the cross-attention keys and values kept in the cache."""

    model: Any

    def encode(self, variables, src_tokens):
        return self.model.encode(variables, src_tokens)

    def init_cache(self, variables, encoded, max_len):
        return {**self.model.init_cache(variables, encoded, max_len), "cross": encoded["cross"]}

    def step(self, variables, encoded, cache, prev_tokens, position):
        logits, new_cache = self.model.step(
            variables, {**encoded, "cross": cache["cross"]}, {"self": cache["self"]}, prev_tokens,
            position,
        )
        return logits, {**new_cache, "cross": cache["cross"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 8, 1])
    args = parser.parse_args()
    common.set_threads(args.threads)  # before jax is imported, below
    import jax
    import numpy as np
    from decode_vs_hf import BEAM, MAX_LEN, VOCAB, full_length_inputs
    from train_vs_torch import transformer_config

    from flax_s2s import decoding
    from flax_s2s.models import build_model

    load_before = common.load_average()
    model = build_model(transformer_config(), VOCAB, VOCAB)
    sides = {"cross K/V in encoded (shipped)": model, "cross K/V in the cache (before)": CacheLayout(model)}
    rows = []
    for batch in args.batches:
        variables, src = full_length_inputs(model, batch)
        outputs = [decoding.beam_search(side, variables, src, BEAM, MAX_LEN)[0] for side in sides.values()]
        if not np.array_equal(*outputs):
            raise AssertionError("the two cache layouts found different hypotheses")
        calls = {name: (lambda side=side, variables=variables, src=src: jax.block_until_ready(
                     decoding.beam_search(side, variables, src, BEAM, MAX_LEN)))
                 for name, side in sides.items()}
        seconds = common.compare(calls, warmup=2, windows=7, repeats=3 if batch > 1 else 20)
        shipped, before = (seconds[name] for name in sides)
        rows.append([batch, 1000 * shipped, 1000 * before, f"{before / shipped:.2f}x"])
        print(f"done: batch {batch}", file=sys.stderr, flush=True)

    print("\n".join(common.machine_lines(args.threads, load_before)))
    print(f"- beam {BEAM}, {MAX_LEN} output tokens; median of 7 alternating windows\n")
    header = ["batch", "cross K/V in encoded ms", "in the cache ms", "speed-up"]
    print("\n".join(common.table(header, rows)))


if __name__ == "__main__":
    main()
