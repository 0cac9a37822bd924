"""Minimum Bayes-risk decoding against greedy and beam search on G2P validation.

    taskset -c 0 python bench/mbr_g2p.py --workdir runs/g2p_gru [--samples 16,32] [--no_record]

WORKDIR is a trained G2P run (the one-hour recipe, `configs/g2p_gru.py`); every arm scores its
validation split with `flax_s2s.evaluate.evaluate_lexicon` (WER and PER with multiple
references, as the run's own evals): greedy, beam 4 (the run's length penalty), MBR over N
samples (temperature 1, full distribution) with edit similarity as the utility (the metric's
own kind: WER/PER are edit distances), and MBR over the 16-best of a beam. Each arm's wall time
includes its compiles (once per batch shape) and, for MBR, the N x N utility matrices.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402  (set_threads before jax)

common.set_threads(1)

from flax_s2s import evaluate  # noqa: E402
from flax_s2s.mbr import MBRSettings  # noqa: E402


def arms(samples: list[int]) -> dict[str, dict]:
    """name -> evaluate_lexicon keyword arguments."""
    out = {"greedy": {}, "beam 4": {"beam_size": 4}}
    for n in samples:
        out[f"MBR, {n} samples (edit)"] = {"mbr_settings": MBRSettings(n, "sample", "edit")}
    out["MBR, beam-16 n-best (edit)"] = {"mbr_settings": MBRSettings(16, "beam", "edit")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--samples", default="16,32")
    parser.add_argument("--no_record", action="store_true", help="print only; RESULTS.md untouched")
    args = parser.parse_args()
    load = common.load_average()
    rows = []
    for name, kwargs in arms([int(n) for n in args.samples.split(",")]).items():
        start = time.perf_counter()
        result = evaluate.evaluate_lexicon(args.workdir, None, split="validation", **kwargs)
        seconds = time.perf_counter() - start
        rows.append([name, f"{result['wer']:.2f}", f"{result['per']:.2f}",
                     f"{result['exact_match']:.4f}", f"{seconds:.0f}"])
        print(rows[-1], flush=True)
    lines = [*common.machine_lines(1, load), "", "```bash",
             f"PYTHONPATH=. python bench/mbr_g2p.py --workdir WORKDIR --samples {args.samples}",
             "```", "", f"Validation split of the workdir's run ({result['words']} words, step "
             f"{result['step']}):", "",
             *common.table(["decoding", "WER %", "PER %", "exact match", "wall s"], rows)]
    if args.no_record:
        print("\n".join(lines))
    else:
        common.append_section("MBR decoding on G2P validation (`bench/mbr_g2p.py`)", lines)


if __name__ == "__main__":
    main()
