"""`python -m flax_s2s.cli.score --workdir DIR --input SRC --targets TGT [--format jsonl] ...` (or
`flax-s2s-score`, or `python -m flax_s2s.score`): the log-probability of each given target line
after its source line, under a trained workdir's model (`flax_s2s.score`)."""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from flax_s2s.cli import common
from flax_s2s.errors import FileFormatError
from flax_s2s.score import OUTPUT_FORMATS, InputError, score_file
from flax_s2s.workdirs import WorkdirError


def define_flags() -> None:
    """The command's flags, defined only when it runs (see `flax_s2s.cli`)."""
    flags.DEFINE_string("workdir", None, "A training workdir with checkpoints.")
    flags.DEFINE_string("input", None, "File with one source per line.")
    flags.DEFINE_string("targets", None, "File with the output to score for each source, line by "
                        "line beside --input.")
    flags.DEFINE_enum("format", "text", list(OUTPUT_FORMATS), "text: log_prob<TAB>tokens<TAB>mean "
                      "per line; jsonl: one JSON object per line, with the tokens and their "
                      "log-probabilities.")
    flags.DEFINE_integer("batch_size", 64, "Line pairs scored per batch.")
    flags.DEFINE_integer("step", None, "Checkpoint step to score with (default: the newest).")
    flags.DEFINE_integer("average", 1, "Score with the mean variables of this many kept "
                         "checkpoints, ending at --step.")
    flags.DEFINE_boolean("raw_weights", False, "Score with the trained parameters, not their "
                         "moving average where the run kept one (config.ema_decay > 0).")
    flags.DEFINE_boolean("strict", False, "Fail at the first pair that cannot be scored (not "
                         "UTF-8, empty, too long) instead of printing an empty line for it.")
    flags.mark_flags_as_required(["workdir", "input", "targets"])


def main(argv: Sequence[str]) -> None:
    common.start(argv)
    args = flags.FLAGS
    try:
        outputs = score_file(args.workdir, args.input, args.targets, args.format,
                             args.batch_size, args.step, args.average, args.raw_weights,
                             args.strict)
    except (WorkdirError, InputError, FileFormatError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    for output in outputs:
        print(output)


def run() -> None:
    """The command: `python -m flax_s2s.cli.score ...`, `flax-s2s-score ...`."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
