"""`python -m flax_s2s.cli.distill --workdir TEACHER [--workdir ...] --out DIR --beam K ...` (or
`flax-s2s-distill`, or `python -m flax_s2s.distill`): a teacher's (or an ensemble's) beam outputs
for a split, written as parallel text for a student to train on, resumable by shard
(`flax_s2s.distill`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import app, flags

from flax_s2s.cli import common
from flax_s2s.distill import InputError, distill
from flax_s2s.errors import FileFormatError
from flax_s2s.outputs import OutputError
from flax_s2s.workdirs import WorkdirError


def define_flags() -> None:
    """The command's flags, defined only when it runs (see `flax_s2s.cli`)."""
    flags.DEFINE_multi_string("workdir", None, "A trained teacher workdir; several decode "
                              "together as an ensemble.")
    flags.DEFINE_string("out", None, "The directory to write {split}.jsonl into (continued when "
                        "it holds an unfinished run with the same settings).")
    flags.DEFINE_integer("beam", 5, "Beam width of the teacher's search.")
    flags.DEFINE_float("alpha", None, "Length-penalty exponent (default: the first teacher's "
                       "config.eval_length_alpha).")
    flags.DEFINE_string("data", "", "The split's data in place of the first teacher's "
                        "config.data_path (its file or directory); default: the teacher's own.")
    flags.DEFINE_string("split", "train", "The split to distil.")
    flags.DEFINE_boolean("keep_references", False, "Each row's target is the list of the "
                         "teacher's output and the references: train on both.")
    flags.DEFINE_integer("shard_size", 10_000, "Sources per shard, the unit a stopped run "
                         "continues from.")
    flags.DEFINE_integer("batch_size", 64, "Sources decoded per batch.")
    flags.DEFINE_integer("max_shards", 0, "Write at most this many shards in this run, then "
                         "stop (0: all); a later run continues.")
    flags.DEFINE_boolean("overwrite", False, "Replace a finished (or differently set) --out that "
                         "holds only this command's files.")
    flags.mark_flags_as_required(["workdir", "out"])


def main(argv: Sequence[str]) -> None:
    common.start(argv)
    args = flags.FLAGS
    try:
        distill(args.workdir, args.out, args.beam, args.data, args.split, args.keep_references,
                args.shard_size, args.batch_size, args.alpha, args.max_shards, args.overwrite,
                log=lambda message: print(message, file=sys.stderr, flush=True))
    except (WorkdirError, InputError, OutputError, FileFormatError, FileNotFoundError,
            ValueError) as error:
        raise SystemExit(f"error: {error}") from None


def run() -> None:
    """The command: `python -m flax_s2s.cli.distill ...`, `flax-s2s-distill ...`."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
