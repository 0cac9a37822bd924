"""Packed batches against length buckets against neither on the code -> docstring task's long
sources (`bench/code2doc.py`), with `configs/code2doc_transformer.py`'s model, vocabularies and
lengths: padding fraction, examples and target tokens a second of the jitted train step.

    taskset -c 0,1 python bench/code2doc_speed.py [--data data/code2doc] [--threads 2]
        [--boundaries 64,128] [--pack_tgt_len 64] [--steps_per_call 8] [--windows 4]

The training split is tokenized as `too_long="truncate"` does (a source cut to max_src_len, a
target cut to max_tgt_len ending in EOS), by this script, so that it runs with or without that
policy in the library. Each arm draws the first 200 batches of the training pipeline as
`train.py` would and times its train step as `bench/pack.py` does (arms alternated, each call a
pass over `steps_per_call` batches of that arm in the pipeline's mix of shapes, after one
untimed pass that compiles them). Arms: neither (every batch at max_src_len x max_tgt_len),
buckets (`--boundaries`), packed (rows of max_src_len x max_tgt_len), and with `--pack_tgt_len N`
packed rows of max_src_len x N (targets cut at N instead: a packed row of 32 target tokens holds
about two of these targets, while its 256 source tokens would hold about four sources).
Examples/s is the number to compare: every arm sees the same examples. On a busy machine read
also examples per CPU second (process CPU seconds while timed, `common.compare`), which other
processes move less than wall time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/common.py
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project

import common  # noqa: E402

PADDING_BATCHES = 200


def truncated_examples(pairs, src_vocab, tgt_vocab, max_src_len: int, max_tgt_len: int):
    """(Examples, sources cut, targets cut): sources cut to max_src_len (no EOS, the config's
    vocab.src_eos False), targets to max_tgt_len - 1 pieces and EOS."""
    import numpy as np

    from flax_s2s.data.examples import Examples

    src_pad, tgt_pad = src_vocab.special_tokens.pad, tgt_vocab.special_tokens.pad
    src = np.full((len(pairs), max_src_len), src_pad, np.int32)
    tgt = np.full((len(pairs), max_tgt_len), tgt_pad, np.int32)
    cut_src = cut_tgt = 0
    for row, (source, target) in enumerate(pairs):
        src_ids = src_vocab.encode(source, add_eos=False)
        tgt_ids = tgt_vocab.encode(target, add_eos=False)
        cut_src += len(src_ids) > max_src_len
        cut_tgt += len(tgt_ids) + 1 > max_tgt_len
        src_ids, tgt_ids = src_ids[:max_src_len], tgt_ids[: max_tgt_len - 1] + [tgt_vocab.special_tokens.eos]
        src[row, : len(src_ids)] = src_ids
        tgt[row, : len(tgt_ids)] = tgt_ids
    return Examples(src, tgt, list(pairs), src_pad, tgt_pad), cut_src, cut_tgt


def arm_sides(config, arms: dict, model, steps_per_call: int):
    """{arm: timed function} and {arm: (padding, examples/step, target tokens/step)}."""
    import jax
    import numpy as np

    from flax_s2s import training
    from flax_s2s.data import pipeline

    sides, facts = {}, {}
    for arm, (examples, boundaries, pack) in arms.items():
        dataset = pipeline.train_dataset(examples, config.batch_size, config.seed,
                                         bucket_boundaries=boundaries, pack=pack)
        iterator = pipeline.train_iterator(dataset)
        batches = [next(iterator) for _ in range(PADDING_BATCHES)]
        timed = common.representative(batches, steps_per_call)
        tx = training.make_optimizer(config)
        state = training.create_train_state(model, tx, config.seed, timed[0])
        step = jax.jit(training.make_train_step(model, tx, config), donate_argnums=0)
        holder = {"state": state}

        def run(holder=holder, step=step, timed=timed):
            for batch in timed:
                holder["state"], out = step(holder["state"], batch)
            jax.block_until_ready(out)

        sides[arm] = run
        per_step = (np.mean([b["tgt_segment_ids"].max(1).sum() for b in timed]) if pack
                    else config.batch_size)
        tokens = sum(int((b["tgt_tokens"] != examples.tgt_pad).sum()) for b in timed)
        facts[arm] = (common.padding_fraction(batches, examples.src_pad, examples.tgt_pad),
                      float(per_step), tokens / len(timed))
        print(f"{arm}: padding {facts[arm][0]:.3f}, {facts[arm][1]:.1f} examples and "
              f"{facts[arm][2]:.0f} target tokens a step; shapes "
              f"{sorted({b['src_tokens'].shape for b in timed})}", flush=True)
    return sides, facts


def main(args: argparse.Namespace) -> None:
    from configs import code2doc_transformer
    from flax_s2s.data.vocab import SentencePieceVocab
    from flax_s2s.models import build_model

    config = code2doc_transformer.get_config()
    with open(os.path.join(args.data, "train.jsonl"), encoding="utf-8") as f:
        pairs = [(r["source"], r["target"]) for r in map(json.loads, f)]
    vocabs = [SentencePieceVocab.train((pair[side] for pair in pairs), config.vocab.sp_vocab_size,
                                       config.vocab.sp_model_type) for side in (0, 1)]
    examples, cut_src, cut_tgt = truncated_examples(pairs, *vocabs, config.max_src_len,
                                                    config.max_tgt_len)
    boundaries = tuple(int(b) for b in args.boundaries.split(","))
    arms = {"neither": (examples, (), False), f"buckets {boundaries}": (examples, boundaries, False),
            f"packed {config.max_src_len}x{config.max_tgt_len}": (examples, (), True)}
    if args.pack_tgt_len:
        wide, _, cut_wide = truncated_examples(pairs, *vocabs, config.max_src_len, args.pack_tgt_len)
        arms[f"packed {config.max_src_len}x{args.pack_tgt_len}"] = (wide, (), True)

    load_before = common.load_average()
    model = build_model(config, len(vocabs[0]), len(vocabs[1]))
    sides, facts = arm_sides(config, arms, model, args.steps_per_call)
    seconds = common.compare(sides, warmup=1, windows=args.windows, repeats=1)
    rows = []
    for arm in arms:
        padding, per_step, tokens = facts[arm]
        steps_per_s = args.steps_per_call / seconds[arm]
        cpu_per_step = common.CPU_USE[arm] / steps_per_s
        rows.append([arm, padding, per_step, tokens, steps_per_s, per_step * steps_per_s,
                     tokens * steps_per_s, cpu_per_step, per_step / cpu_per_step])
    base, base_cpu = rows[0][5], rows[0][8]
    rows = [row + [row[5] / base, row[8] / base_cpu] for row in rows]
    header = ["arm", "padding fraction", "examples/step", "target tokens/step", "steps/s",
              "examples/s", "target tokens/s", "CPU s/step", "examples/CPU s",
              "examples/s vs neither", "examples/CPU s vs neither"]
    lines = [
        "```",
        f"taskset -c {','.join(map(str, common.pinned_cores()))} python bench/code2doc_speed.py "
        f"--threads {args.threads} --boundaries {args.boundaries}"
        + (f" --pack_tgt_len {args.pack_tgt_len}" if args.pack_tgt_len else "")
        + f" --steps_per_call {args.steps_per_call} --windows {args.windows}",
        "```",
        "",
        *common.machine_lines(args.threads, load_before),
        f"- {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}: {len(pairs)} training "
        f"examples, vocabularies {len(vocabs[0])} / {len(vocabs[1])} pieces; cut to "
        f"{config.max_src_len} / {config.max_tgt_len}: {cut_src} sources, {cut_tgt} targets"
        + (f" ({cut_wide} targets at {args.pack_tgt_len})" if args.pack_tgt_len else ""),
        f"- Model: d_model {config.model.d_model}, {config.model.num_encoder_layers}+"
        f"{config.model.num_decoder_layers} layers, mlp {config.model.mlp_dim}, batch "
        f"{config.batch_size} rows; padding over the first {PADDING_BATCHES} batches",
        "",
        *common.table(header, rows),
    ]
    print("\n".join(lines))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--data", default=os.path.join(root, "data", "code2doc"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--boundaries", default="64,128")
    parser.add_argument("--pack_tgt_len", type=int, default=0)
    parser.add_argument("--steps_per_call", type=int, default=8)
    parser.add_argument("--windows", type=int, default=4)
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    common.set_threads(args.threads)  # before jax starts its thread pools
    main(args)
