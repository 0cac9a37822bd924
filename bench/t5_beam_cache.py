"""T5's beam search with its self-attention cache read in place (as shipped) against the same
model with every cache leaf gathered by beam at each step (the path before), in one process.

    PYTHONPATH=. taskset -c 0 python bench/t5_beam_cache.py [--threads 1] [--windows 9]

The shipped T5 keeps each beam's keys and values where its step wrote them and follows the beams
through a table (`init_beam_cache` / `reorder_cache`, `attention.attend_beams`); `Gathered` wraps
the same model without those two methods, so beam search falls back to gathering every leaf of
the cache by beam (what it did for T5 before). The two arms run alternately, A B then B A, one
call each per window, and their hypotheses are checked equal first. Each call's process CPU
seconds are reported beside its wall time: on a shared core the CPU time is what the call cost,
the wall time also counts the time other processes held the core.
The model is T5 at t5-small's shape (`T5Config()`: d_model 512, 8 heads of 64, ff 2048, 6+6
layers, vocabulary 32128, tied output), random weights; batch 8 x 32 source tokens, beam 4,
exactly 32 output tokens (min_len = max_len = 32: EOS is never allowed, so no row ends early).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BATCH, SRC_LEN, OUT_LEN, BEAM = 8, 32, 32, 4


@dataclasses.dataclass(frozen=True)
class Gathered:
    """The seam of `model` without `init_beam_cache` / `reorder_cache`: beam search gathers
    every cache leaf by beam at each step."""

    model: Any

    @property
    def special_tokens(self):
        return self.model.special_tokens

    def encode(self, variables, src_tokens):
        return self.model.encode(variables, src_tokens)

    def init_cache(self, variables, encoded, max_len):
        return self.model.init_cache(variables, encoded, max_len)

    def step(self, variables, encoded, cache, prev_tokens, position):
        return self.model.step(variables, encoded, cache, prev_tokens, position)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--windows", type=int, default=9)
    args = parser.parse_args()
    common.set_threads(args.threads)  # before jax is imported, below
    import jax
    import numpy as np

    from flax_s2s import decoding
    from flax_s2s.models import Seq2Seq
    from flax_s2s.models.t5 import T5, T5Config

    load_before = common.load_average()
    config = T5Config(dropout_rate=0.0)  # t5-small's shape
    model = Seq2Seq(T5(config))
    rng = np.random.default_rng(0)
    src = rng.integers(3, config.vocab_size, (BATCH, SRC_LEN)).astype(np.int32)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), src, np.zeros((BATCH, OUT_LEN), np.int32))
    sides = {"in place (shipped)": model, "gathered by beam (before)": Gathered(model)}

    def run(side):
        return jax.block_until_ready(decoding.beam_search(
            side, variables, src, BEAM, OUT_LEN, alpha=0.6, min_len=OUT_LEN))

    (tokens, lengths, scores), (tokens_b, _, scores_b) = (run(side) for side in sides.values())
    if not np.array_equal(tokens, tokens_b):
        raise AssertionError("the two beam caches found different hypotheses")
    assert (np.asarray(lengths) == OUT_LEN).all(), "every hypothesis must have OUT_LEN tokens"
    score_gap = float(np.abs(np.asarray(scores) - np.asarray(scores_b)).max())

    calls = {name: (lambda side=side: run(side)) for name, side in sides.items()}
    samples: dict[str, list[float]] = {name: [] for name in sides}
    use: dict[str, list[float]] = {name: [] for name in sides}
    for window in range(args.windows):  # A B, B A, A B, ...: a load change hits both arms
        for name in (list(sides) if window % 2 == 0 else list(reversed(sides))):
            seconds, cpu = common.time_with_cpu(calls[name], 1)
            samples[name].append(seconds)
            use[name].append(cpu)
        print(f"window {window}: " + ", ".join(f"{n} {samples[n][-1]:.3f} s" for n in sides),
              file=sys.stderr, flush=True)
    for name in sides:
        common.CPU_USE[name] = statistics.median(use[name])
    cpu_seconds = {name: [w * u for w, u in zip(samples[name], use[name], strict=True)]
                   for name in sides}
    shipped, before = (samples[name] for name in sides)
    ratios = [b / s for s, b in zip(shipped, before, strict=True)]
    cpu_ratios = [b / s for s, b in zip(*cpu_seconds.values(), strict=True)]

    print("\n".join(common.machine_lines(args.threads, load_before)))
    print(f"- T5 t5-small shape, random weights; batch {BATCH} x {SRC_LEN} source tokens, beam "
          f"{BEAM}, {OUT_LEN} output tokens; {args.windows} alternating windows of one call\n")
    header = ["arm", "median wall s", "min wall s", "max wall s", "median CPU s"]
    rows = [[name, f"{statistics.median(v):.3f}", f"{min(v):.3f}", f"{max(v):.3f}",
             f"{statistics.median(cpu_seconds[name]):.3f}"] for name, v in samples.items()]
    print("\n".join(common.table(header, rows)))
    print(f"\nbefore / in place per window: {', '.join(f'{r:.3f}' for r in ratios)}")
    print(f"median of the window ratios {statistics.median(ratios):.3f}x, ratio of the medians "
          f"{statistics.median(before) / statistics.median(shipped):.3f}x; in place faster in "
          f"{sum(r > 1 for r in ratios)} of {len(ratios)} windows; hypotheses identical, "
          f"scores within {score_gap:.1e}")
    print(f"process CPU s, before / in place per window: {', '.join(f'{r:.3f}' for r in cpu_ratios)}"
          f"; median {statistics.median(cpu_ratios):.3f}x, in place cheaper in "
          f"{sum(r > 1 for r in cpu_ratios)} of {len(cpu_ratios)} windows")


if __name__ == "__main__":
    main()
