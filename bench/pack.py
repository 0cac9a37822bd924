"""Packed batches against length buckets against neither: target tokens/s and padding fraction
of the Transformer's train step, on G2P (CMUdict) and on a parallel-text task made here.

    taskset -c 1 python bench/pack.py --data_path PATH/TO/g014b2b.train [--steps_per_call 8] [--windows 4]
        [--tasks g2p,text] [--no_record]

For each task and arm the script draws the first batches of the training pipeline as
`train.py` would (seeded order, `config.pack` / `config.bucket_boundaries`), and:
- padding fraction: pad tokens over all tokens (source and target) of the first 200 batches;
- target tokens/s: real (non-pad) target tokens a second of the jitted train step, the arms
  timed alternately (`common.compare`), each call one pass over the same `steps_per_call`
  batches of that arm (after one untimed pass, which compiles every shape it holds), chosen
  from those 200 with each bucket's share (`representative`).

Equal compute is equal tokens, not equal steps: a packed row of `max_src_len` tokens holds
several examples, so a packed step costs about what an unbucketed one does and carries more real
tokens. Tokens/s is the number to compare; steps/s is printed for reference.

G2P: `configs/g2p_transformer.py`'s model and batch (64 rows), `configs/g2p_lstm.py`'s lengths
(24 / 24) and buckets (8, 12). Text: reversal of random lowercase strings (words and spaces)
with lengths spread from 2 to 48 characters, written as parallel text files and read by the
`parallel_text` task; `configs/reverse_transformer.py`'s model, lengths 48 / 49, buckets
(12, 24).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/common.py
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project

import common  # noqa: E402

common.set_threads(1)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import g2p_transformer, reverse_transformer  # noqa: E402
from flax_s2s import training  # noqa: E402
from flax_s2s.data import pipeline, task_data  # noqa: E402
from flax_s2s.models import build_model  # noqa: E402

ARMS = ("neither", "buckets", "packed")
PADDING_BATCHES = 200


def g2p_config(data_path: str):
    config = g2p_transformer.get_config()
    config.data_path = data_path
    return config


def write_reversal_texts(directory: str, seed: int = 0, sizes=(20_000, 200, 200)) -> None:
    """train/validation/test.{src,tgt}: random lowercase words joined by spaces, 2-48
    characters (lengths log-uniform, so short lines are common and long ones not rare), each
    target the source reversed."""
    rng = np.random.default_rng(seed)
    for split, size in zip(("train", "validation", "test"), sizes, strict=True):
        lengths = np.exp(rng.uniform(np.log(2), np.log(48), size)).astype(int)
        lines = []
        for length in lengths:
            letters = rng.choice(list("abcdefghijklmnopqrstuvwxyz "), length)
            text = "".join(letters).strip() or "a"
            lines.append(text)
        with open(os.path.join(directory, f"{split}.src"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(directory, f"{split}.tgt"), "w", encoding="utf-8") as f:
            f.write("\n".join(line[::-1] for line in lines) + "\n")


def text_config(directory: str):
    config = reverse_transformer.get_config()
    config.task = "parallel_text"
    config.data_path = directory
    config.max_src_len, config.max_tgt_len = 48, 49
    config.bucket_boundaries = (12, 24)
    config.model.share_embeddings = False  # the vocabularies are built per side
    config.model.tie_output = False
    config.batch_size = 64
    return config


def arm_config(config, arm: str):
    config = config.copy_and_resolve_references()
    config.pack = arm == "packed"
    config.bucket_boundaries = tuple(config.bucket_boundaries) if arm == "buckets" else ()
    return config


def bench_task(name: str, config, workdir: str, steps_per_call: int, windows: int) -> list[list]:
    """One row per arm: [task, arm, padding, examples/step, target tokens/step, steps/s,
    target tokens/s, speed-up over neither]."""
    data = task_data.load_task_data(config, workdir, ("train",))
    examples = data.splits["train"]
    model = build_model(config, len(data.src_vocab), len(data.tgt_vocab))
    sides, facts = {}, {}
    for arm in ARMS:
        arm_cfg = arm_config(config, arm)
        dataset = pipeline.train_dataset(examples, arm_cfg.batch_size, arm_cfg.seed,
                                         bucket_boundaries=arm_cfg.bucket_boundaries,
                                         pack=arm_cfg.pack)
        iterator = pipeline.train_iterator(dataset)
        batches = [next(iterator) for _ in range(PADDING_BATCHES)]
        timed = common.representative(batches, steps_per_call)
        tx = training.make_optimizer(arm_cfg)
        state = training.create_train_state(model, tx, arm_cfg.seed, timed[0])
        step = jax.jit(training.make_train_step(model, tx, arm_cfg), donate_argnums=0)
        holder = {"state": state}

        def run(holder=holder, step=step, timed=timed):
            for batch in timed:
                holder["state"], out = step(holder["state"], batch)
            jax.block_until_ready(out)

        sides[arm] = run
        segments = [b.get("tgt_segment_ids") for b in timed]
        examples_per_step = (np.mean([s.max(1).sum() for s in segments]) if arm_cfg.pack
                             else arm_cfg.batch_size)
        tokens = sum(int((b["tgt_tokens"] != examples.tgt_pad).sum()) for b in timed)
        facts[arm] = (common.padding_fraction(batches, examples.src_pad, examples.tgt_pad),
                      float(examples_per_step), tokens / len(timed))
        print(f"{name} {arm}: padding {facts[arm][0]:.3f}, {facts[arm][1]:.1f} examples and "
              f"{facts[arm][2]:.0f} target tokens a step; shapes "
              f"{sorted({b['src_tokens'].shape for b in timed})}", flush=True)
    seconds = common.compare(sides, warmup=1, windows=windows, repeats=1)
    rows = []
    for arm in ARMS:
        padding, examples_per_step, tokens_per_step = facts[arm]
        per_step = seconds[arm] / steps_per_call
        tokens_per_s = tokens_per_step / per_step
        rows.append([name, arm, padding, examples_per_step, tokens_per_step, 1 / per_step,
                     tokens_per_s])
    base = rows[0][-1]
    return [row + [row[-1] / base] for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data_path", default="", help="the G2P lexicon (WORD<TAB>PHONES)")
    parser.add_argument("--tasks", default="g2p,text")
    parser.add_argument("--steps_per_call", type=int, default=8)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--no_record", action="store_true", help="print, do not append to RESULTS.md")
    args = parser.parse_args()
    load_before = common.load_average()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.tasks.split(","):
            if name == "g2p":
                if not args.data_path:
                    parser.error("--data_path is needed for the g2p task")
                config = g2p_config(args.data_path)
            elif name == "text":
                texts = os.path.join(scratch, "texts")
                os.makedirs(texts)
                write_reversal_texts(texts)
                config = text_config(texts)
            else:
                parser.error(f"unknown task {name!r}: g2p or text")
            rows += bench_task(name, config, os.path.join(scratch, name), args.steps_per_call,
                               args.windows)
    header = ["task", "arm", "padding fraction", "examples/step", "target tokens/step",
              "steps/s", "target tokens/s", "tokens/s vs neither"]
    steps = args.steps_per_call * (args.windows + 1)
    lines = [
        "Packed batches (`config.pack`) against length buckets against neither, the "
        "Transformer's jitted train step (`python bench/pack.py`).",
        "",
        "```",
        f"taskset -c {','.join(map(str, common.pinned_cores()))} python bench/pack.py "
        f"--data_path DATA/g014b2b.train --tasks {args.tasks} --steps_per_call "
        f"{args.steps_per_call} --windows {args.windows}",
        "```",
        "",
        *common.machine_lines(1, load_before),
        f"- Each arm: {steps} steps ({args.windows} timed passes of {args.steps_per_call} "
        f"batches after one untimed), arms alternated; padding over the first "
        f"{PADDING_BATCHES} batches",
        "",
        *common.table(header, rows),
    ]
    if args.no_record:
        print("\n".join(lines))
    else:
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        common.append_section(f"Packed batches vs length buckets (`bench/pack.py`, {date})", lines)


if __name__ == "__main__":
    main()

