"""Validation WER and PER of G2P runs against wall minutes (and epochs), from their workdirs.

    python bench/g2p_curves.py LABEL=WORKDIR [LABEL=WORKDIR ...] [--out bench/g2p_curves.png]

Reads each workdir's metrics.jsonl (`wall_s` is the run's time since it first started, summed
over resumes) and its config (batch size, from the newest checkpoint), prints one markdown table
per run and draws WER and PER against minutes, all runs on one figure.
"""

import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flax_s2s.checkpoint import Checkpointer  # noqa: E402
from flax_s2s.logs import read_records  # noqa: E402

TRAIN_PRONUNCIATIONS = 107_832  # g014b2b.train lines outside the carved validation split
# The G2P targets (WER %, PER %): within one hour of training here, and within about four.
TARGETS = {"1 h": (27.0, 6.5), "4 h": (22.0, 5.2)}


def validation_curve(workdir: str) -> list[dict]:
    """The last validation record of each step, in step order."""
    by_step = {}
    for record in read_records(os.path.join(workdir, "metrics.jsonl")):
        if record["split"] == "validation" and "wer" in record:
            by_step[record["step"]] = record
    return [by_step[step] for step in sorted(by_step)]


def batch_size(workdir: str) -> int:
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        return int(checkpointer.restore_config()["batch_size"])
    finally:
        checkpointer.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", help="LABEL=WORKDIR")
    parser.add_argument("--out", default="bench/g2p_curves.png")
    args = parser.parse_args()
    figure, (wer_axes, per_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for run in args.runs:
        label, workdir = run.split("=", 1)
        curve = validation_curve(workdir)
        batch = batch_size(workdir)
        print(f"\n{label} ({workdir}, batch {batch})\n")
        print("| wall min | step | epochs | validation WER % | PER % |")
        print("|---|---|---|---|---|")
        for r in curve:
            epochs = r["step"] * batch / TRAIN_PRONUNCIATIONS
            minutes = r["wall_s"] / 60
            print(f"| {minutes:.1f} | {r['step']} | {epochs:.1f} | {r['wer']:.2f} | {r['per']:.2f} |")
        minutes = [r["wall_s"] / 60 for r in curve]
        wer_axes.plot(minutes, [r["wer"] for r in curve], marker="o", label=label)
        per_axes.plot(minutes, [r["per"] for r in curve], marker="o", label=label)
    for index, (axes, name) in enumerate(((wer_axes, "WER %"), (per_axes, "PER %"))):
        for budget, targets in TARGETS.items():
            axes.axhline(targets[index], color="gray", linestyle=":", linewidth=1)
            axes.annotate(f"{budget} target", (axes.get_xlim()[1], targets[index]), fontsize=7,
                          ha="right", va="bottom", color="gray")
        axes.axvline(60, color="gray", linestyle="--", linewidth=0.8)
        axes.set_xlabel("wall minutes (2 CPU cores)")
        axes.set_ylabel(f"validation {name}")
        axes.grid(alpha=0.3)
    wer_axes.legend()
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
