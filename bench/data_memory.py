"""Memory and speed of `train.py` as the training corpus grows: peak RSS, time to the first step
and steps/s at 100k, 1M and 5M generated pairs; and steps/s on CMUdict G2P, arms side by side.

    taskset -c 1 python bench/data_memory.py memory --root DIR [--sizes 100000 1000000 5000000]
        [--steps 300] [--arm NAME[@TREE][,--config.KEY=VALUE...]] [--set --config.KEY=VALUE]
    taskset -c 1 python bench/data_memory.py g2p --data_path PATH/TO/g014b2b.train --root DIR
        [--steps 600] [--rounds 2] [--arm ...] [--in_process [--windows 9] [--window_steps 50]]

memory: writes N G2P-like pairs (random letter strings -> their phones by a fixed rule set,
deterministic from `--seed`; the first N of a larger N are the same pairs) as a parallel-text
directory (`train.{src,tgt}`, 500 validation pairs), then runs `python train.py
--config=configs/g2p_lstm.py --config.task=parallel_text --config.data_path=DIR` for `--steps`
steps per N and arm, one process at a time. g2p: `configs/g2p_gru.py` on the CMUdict file,
`--rounds` runs of each arm alternating (A B, B A, ...); with `--in_process`, also the train step
of this tree fed by the train split in memory and by its token store, timed in one process in
alternating windows (the finer comparison where the machine's load moves between runs).

An arm is a name, optionally `@` a source tree to run (`git archive COMMIT | tar -x -C TREE`:
the code before a change, run in the same script as the code after), and config overrides:
`--arm before@/tmp/main --arm after,--config.token_store=true`. Default: one arm, this tree.

Each run is pinned to the cores this script may use (children inherit `taskset`), one thread
for every library, no compilation cache (every run compiles). Measured per run:
- peak RSS: the child's `ru_maxrss` (`os.wait4`), the whole run: reading, vocabularies,
  tokenizing, compiling, training, the final evaluation;
- RSS at the first step: the child's peak (`VmHWM`) when its first metrics record appears;
- time to the first step: seconds from the start of the process to the first train step's end,
  estimated as the arrival of the record of step `log_every` less `log_every - 1` steps at the
  measured rate (the first step includes its compile);
- steps/s: train steps between the record of step 100 (every bucket's shape compiled by then)
  and the last step's record, over the `wall_s` between them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/common.py

import common  # noqa: E402

common.set_threads(1)

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNK = 100_000  # pairs generated per seeded chunk: a larger corpus starts with a smaller one
VALIDATION = 500
LOG_EVERY = 25
RATE_FROM = 100  # steps/s are measured from this step's record on
CORPUS_VERSION = 1

LETTERS = "abcdefghijklmnopqrstuvwxyz"
# English letter frequencies, percent: the words look like words' letter soup
FREQ = np.array([8.2, 1.5, 2.8, 4.3, 12.7, 2.2, 2.0, 6.1, 7.0, 0.2, 0.8, 4.0, 2.4, 6.7, 7.5, 1.9,
                 0.1, 6.0, 6.3, 9.1, 2.8, 1.0, 2.4, 0.2, 2.0, 0.1])
PHONE = dict(a="AE", b="B", c="K", d="D", e="EH", f="F", g="G", h="HH", i="IH", j="JH", k="K",
             l="L", m="M", n="N", o="AA", p="P", q="K", r="R", s="S", t="T", u="AH", v="V",
             w="W", x="K S", y="Y", z="Z")
DIGRAPH = {"th": "TH", "sh": "SH", "ch": "CH", "ng": "NG", "ee": "IY", "oo": "UW", "ou": "AW",
           "ai": "EY", "oa": "OW", "ph": "F", "ck": "K"}


def phones(word: str) -> str:
    """The made-up pronunciation: digraphs first, a doubled letter once, a final e silent."""
    out, i = [], 0
    while i < len(word):
        pair = word[i : i + 2]
        if pair in DIGRAPH:
            out.append(DIGRAPH[pair])
            i += 2
            continue
        if i == len(word) - 1 and word[i] == "e" and len(word) > 3:
            break
        if not (i and word[i] == word[i - 1]):
            out.append(PHONE[word[i]])
        i += 1
    return " ".join(out)


def words(seed: int, chunk: int, count: int) -> list[str]:
    """`count` random words (3 to 12 letters) of chunk number `chunk`."""
    rng = np.random.default_rng([seed, chunk])
    lengths = rng.integers(3, 13, count)
    letters = rng.choice(26, int(lengths.sum()), p=FREQ / FREQ.sum())
    text = "".join(LETTERS[i] for i in letters)
    ends = np.cumsum(lengths)
    return [text[end - length : end] for end, length in zip(ends, lengths, strict=True)]


def write_corpus(directory: str, size: int, seed: int) -> None:
    """DIRECTORY/train.{src,tgt} (`size` pairs) and validation.{src,tgt}; kept when already
    written for this size and seed (`corpus.json`, written last)."""
    stamp = {"pairs": size, "seed": seed, "version": CORPUS_VERSION}
    marker = os.path.join(directory, "corpus.json")
    if os.path.exists(marker) and json.load(open(marker)) == stamp:
        return
    os.makedirs(directory, exist_ok=True)
    splits = {"train": [(c, min(CHUNK, size - c * CHUNK)) for c in range(-(-size // CHUNK))],
              "validation": [(10**6, VALIDATION)]}
    for split, chunks in splits.items():
        with (open(os.path.join(directory, f"{split}.src"), "w") as src,
              open(os.path.join(directory, f"{split}.tgt"), "w") as tgt):
            for chunk, count in chunks:
                batch = words(seed, chunk, count)
                src.write("".join(w + "\n" for w in batch))
                tgt.write("".join(phones(w) + "\n" for w in batch))
    with open(marker, "w") as f:
        json.dump(stamp, f)


def parse_arm(spec: str) -> dict:
    """`NAME[@TREE][,OVERRIDE...]` -> {"name", "tree", "overrides"}."""
    head, *overrides = spec.split(",")
    name, _, tree = head.partition("@")
    return {"name": name, "tree": os.path.abspath(tree) if tree else ROOT, "overrides": overrides}


def _status(pid: int) -> dict[str, int]:
    """VmHWM / VmRSS / RssAnon / RssFile of a live process, in KiB ({} once it is gone)."""
    try:
        lines = open(f"/proc/{pid}/status").read().splitlines()
    except OSError:
        return {}
    keys = ("VmHWM", "VmRSS", "RssAnon", "RssFile")
    return {k: int(line.split()[1]) for line in lines for k in keys if line.startswith(k + ":")}


def run_train(tree: str, workdir: str, flags: list[str], log: str, timeout: float) -> dict:
    """One `train.py` run in `tree`, watched until it exits: its peak RSS (MiB), the peak when
    its first record appeared, the largest file-backed RSS seen, the wall time to that record,
    the total wall time and its metrics records."""
    shutil.rmtree(workdir, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=tree)
    command = [sys.executable, "train.py", f"--workdir={workdir}", *flags]
    metrics = os.path.join(workdir, "metrics.jsonl")
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
    first_seen, hwm_first, file_max = None, None, 0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        now = time.perf_counter() - start
        info = _status(process.pid)
        file_max = max(file_max, info.get("RssFile", 0))
        if first_seen is None and os.path.exists(metrics) and os.path.getsize(metrics):
            first_seen, hwm_first = now, info.get("VmHWM", 0)
        if now > timeout:
            process.kill()
        time.sleep(0.05)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        tail = open(log).read()[-3000:]
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}); its log ends:\n{tail}")
    return {"peak_mib": usage.ru_maxrss / 1024, "first_mib": (hwm_first or 0) / 1024,
            "file_mib": file_max / 1024, "first_seen_s": first_seen or wall, "wall_s": wall,
            "records": [json.loads(line) for line in open(metrics) if line.endswith("\n")]}


def timings(result: dict) -> tuple[float, float]:
    """(steps/s from step RATE_FROM to the last train record, time to the first step in s)."""
    train = [r for r in result["records"] if r.get("split") == "train"]
    start = next(r for r in train if r["step"] >= RATE_FROM)
    end = train[-1]
    rate = (end["step"] - start["step"]) / (end["wall_s"] - start["wall_s"])
    first = train[0]
    return rate, result["first_seen_s"] - (first["step"] - 1) / rate


def common_flags(steps: int) -> list[str]:
    return [f"--config.num_train_steps={steps}", f"--config.log_every={LOG_EVERY}",
            f"--config.eval_every={100 * steps}", f"--config.checkpoint_every={100 * steps}",
            "--config.compilation_cache_dir=none"]


def memory(args: argparse.Namespace, arms: list[dict]) -> list[str]:
    """Peak RSS, time to the first step and steps/s for each corpus size and arm."""
    rows = []
    for size in args.sizes:
        corpus = os.path.join(args.root, f"corpus_{size}")
        started = time.perf_counter()
        write_corpus(corpus, size, args.seed)
        mib = sum(os.path.getsize(os.path.join(corpus, f"train.{s}")) for s in ("src", "tgt")) / 2**20
        print(f"corpus {size}: {mib:.0f} MiB ({time.perf_counter() - started:.0f} s)", flush=True)
        for arm in arms:
            flags = ["--config=configs/g2p_lstm.py", "--config.task=parallel_text",
                     f"--config.data_path={corpus}", *common_flags(args.steps), *args.set,
                     *arm["overrides"]]
            workdir = os.path.join(args.root, f"run_{arm['name']}_{size}")
            result = run_train(arm["tree"], workdir, flags, workdir + ".log", args.timeout)
            rate, first = timings(result)
            row = [f"{size:,}", arm["name"], f"{result['peak_mib']:.0f}",
                   f"{result['first_mib']:.0f}", f"{result['file_mib']:.0f}", f"{first:.1f}",
                   f"{rate:.2f}", f"{result['wall_s']:.0f}"]
            print(" | ".join(row), flush=True)
            rows.append(row)
    header = ("pairs", "arm", "peak RSS MiB", "peak RSS at first step MiB",
              "largest file-backed RSS MiB", "time to first step s", "steps/s", "run wall s")
    return common.table(header, rows)


def g2p(args: argparse.Namespace, arms: list[dict]) -> list[str]:
    """steps/s of configs/g2p_gru.py on the CMUdict file, arms alternating over rounds."""
    rates: dict[str, list[float]] = {arm["name"]: [] for arm in arms}
    peaks: dict[str, list[float]] = {arm["name"]: [] for arm in arms}
    for round_ in range(args.rounds):
        for arm in arms if round_ % 2 == 0 else arms[::-1]:
            flags = ["--config=configs/g2p_gru.py", f"--config.data_path={args.data_path}",
                     *common_flags(args.steps), *args.set, *arm["overrides"]]
            workdir = os.path.join(args.root, f"g2p_{arm['name']}_{round_}")
            result = run_train(arm["tree"], workdir, flags, workdir + ".log", args.timeout)
            rate, _ = timings(result)
            rates[arm["name"]].append(rate)
            peaks[arm["name"]].append(result["peak_mib"])
            print(f"round {round_} {arm['name']}: {rate:.2f} steps/s, peak RSS "
                  f"{result['peak_mib']:.0f} MiB", flush=True)
    base = statistics.median(rates[arms[0]["name"]])
    rows = [[name, " / ".join(f"{r:.2f}" for r in values), f"{statistics.median(values):.2f}",
             f"{statistics.median(values) / base:.3f}", f"{statistics.median(peaks[name]):.0f}"]
            for name, values in rates.items()]
    return common.table(("arm", "steps/s per round", "median", f"ratio to {arms[0]['name']}",
                         "peak RSS MiB"), rows)


def printable_command(args: argparse.Namespace) -> str:
    """This run's command line with its paths (root, data file, trees) named, not spelled."""
    names = {args.root: "DIR", args.data_path: "PATH/TO/g014b2b.train"}
    words = []
    for word in sys.argv[1:]:
        for path, name in names.items():
            word = word.replace(path, name) if path else word
        head, at, rest = word.partition("@")
        words.append(head + at + ("TREE" + rest[rest.find(","):] if "," in rest else "TREE")
                     if at else word)
    return "taskset -c CORE python bench/data_memory.py " + " ".join(words)


def g2p_in_process(args: argparse.Namespace) -> list[str]:
    """steps/s of configs/g2p_gru.py's jitted train step, each step fed by the next batch of the
    train iterator of the split in memory or of its token store: one process, the same compiled
    step, the two timed in alternating windows (`common.compare`), so that a change of load hits
    both alike."""
    sys.path.insert(0, ROOT)
    import jax

    from configs import g2p_gru
    from flax_s2s import training
    from flax_s2s.data import pipeline, task_data
    from flax_s2s.data.vocab import model_special_tokens
    from flax_s2s.models import build_model

    config = g2p_gru.get_config()
    config.data_path = args.data_path
    workdir, iterators = os.path.join(args.root, "in_process"), {}
    shutil.rmtree(workdir, ignore_errors=True)
    for name, stored in (("in memory", False), ("token store", True)):
        config.token_store = stored
        data = task_data.load_task_data(config, workdir, ("train",))
        iterators[name] = pipeline.train_iterator(pipeline.train_dataset(
            data.splits["train"], config.batch_size, config.seed,
            bucket_boundaries=tuple(config.bucket_boundaries)))
    model = build_model(config, len(data.src_vocab), len(data.tgt_vocab),
                        model_special_tokens(data.src_vocab, data.tgt_vocab))
    tx = training.make_optimizer(config)
    step = jax.jit(training.make_train_step(model, tx, config), donate_argnums=0)
    shapes = pipeline.bucket_shapes(config.max_src_len, config.max_tgt_len, config.bucket_boundaries)
    states = {}
    for name in (*iterators, "compile"):
        states[name] = training.create_train_state(model, tx, config.seed, next(iterators["in memory"]))
    for src_len, tgt_len in shapes:  # every shape compiled before any timing
        batch = {"src_tokens": np.ones((config.batch_size, src_len), np.int32),
                 "tgt_tokens": np.ones((config.batch_size, tgt_len), np.int32)}
        states["compile"], out = step(states["compile"], batch)
        jax.block_until_ready(out)

    def steps(name: str):
        def run() -> None:
            state = states[name]
            for _ in range(args.window_steps):
                state, out = step(state, next(iterators[name]))
            jax.block_until_ready(out)
            states[name] = state
        return run

    seconds = common.compare({name: steps(name) for name in iterators}, warmup=1,
                             windows=args.windows, repeats=1)
    base = args.window_steps / seconds["in memory"]
    rows = [[name, f"{args.window_steps / s:.2f}", f"{args.window_steps / s / base:.3f}"]
            for name, s in seconds.items()]
    return ["", f"In one process, {args.windows} alternating windows of {args.window_steps} steps "
            "(median; every bucket's shape compiled first):", "",
            *common.table(("train split", "steps/s", "ratio to in memory"), rows),
            common.cpu_use_line()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("memory", "g2p"))
    parser.add_argument("--root", required=True, help="corpora, workdirs and logs go here")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    parser.add_argument("--steps", type=int, default=0, help="default: 300 (memory), 600 (g2p)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_path", default="", help="g2p: the CMUdict g014b2b.train file")
    parser.add_argument("--arm", action="append", default=[])
    parser.add_argument("--set", action="append", default=[], help="overrides of every run")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--in_process", action="store_true",
                        help="g2p: also time the train step fed by each path in one process")
    parser.add_argument("--windows", type=int, default=9)
    parser.add_argument("--window_steps", type=int, default=50)
    parser.add_argument("--no_record", action="store_true", help="print, do not append to RESULTS")
    args = parser.parse_args()
    command = printable_command(args)
    args.steps = args.steps or (300 if args.mode == "memory" else 600)
    if args.mode == "g2p" and not args.data_path:
        parser.error("g2p needs --data_path")
    args.data_path = os.path.abspath(args.data_path) if args.data_path else ""
    arms = [parse_arm(spec) for spec in args.arm] or [parse_arm("this")]
    os.makedirs(args.root, exist_ok=True)
    load_before, started = common.load_average(), time.perf_counter()
    if args.mode == "memory":
        lines = memory(args, arms)
    else:
        lines = g2p(args, arms) if args.rounds else []
    if args.mode == "g2p" and args.in_process:
        lines += g2p_in_process(args)
    date = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}"
    arm_lines = [f"- Arm `{a['name']}`: tree {'this one' if a['tree'] == ROOT else 'given (@)'}, "
                 f"overrides {' '.join(a['overrides']) or 'none'}" for a in arms]
    record = [*common.machine_lines(1, load_before),
              f"- Command: `{command}`",
              f"- Steps per run: {args.steps}; every run: {' '.join(common_flags(args.steps))} "
              f"{' '.join(args.set)}", *arm_lines,
              f"- Wall time: {time.perf_counter() - started:.0f} s", "", *lines]
    title = f"Training data memory (`bench/data_memory.py {args.mode}`, {date})"
    if args.no_record:
        print("\n".join([title, "", *record]))
    else:
        common.append_section(title, record)


if __name__ == "__main__":
    main()
