"""`python -m flax_s2s.cli.score --workdir DIR --input SRC --targets TGT [--format jsonl] ...` (or
`flax-s2s-score`, or `python -m flax_s2s.score`): the log-probability of each given target line
after its source line, under a trained workdir's model (`flax_s2s.score`)."""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from flax_s2s.cli import common
from flax_s2s.score import OUTPUT_FORMATS, score_file


def define_flags() -> None:
    """The command's flags, defined only when it runs (see `flax_s2s.cli`)."""
    common.define_checkpoint_flags("Score")
    flags.DEFINE_string("input", None, "File with one source per line.")
    flags.DEFINE_string("targets", None, "File with the output to score for each source, line by "
                        "line beside --input.")
    flags.DEFINE_enum("format", "text", list(OUTPUT_FORMATS), "text: log_prob<TAB>tokens<TAB>mean "
                      "per line; jsonl: one JSON object per line, with the tokens and their "
                      "log-probabilities.")
    flags.DEFINE_boolean("strict", False, "Fail at the first pair that cannot be scored (not "
                         "UTF-8, empty, too long) instead of printing an empty line for it.")
    flags.mark_flags_as_required(["input", "targets"])
    flags.adopt_module_key_flags(common)  # --help lists the shared flags too


def main(argv: Sequence[str]) -> None:
    common.start(argv)
    args = flags.FLAGS
    common.print_lines(lambda: score_file(
        args.workdir, args.input, args.targets, args.format, args.batch_size, args.step,
        args.average, args.raw_weights, args.strict))


def run() -> None:
    """The command: `python -m flax_s2s.cli.score ...`, `flax-s2s-score ...`."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
