"""`python -m flax_s2s.cli.decode --workdir DIR [--input FILE] [--beam N] ...` (or `flax-s2s-decode`):
decodes text lines, one source per line (or JSON lines, `--input_format`), with a trained
workdir (`flax_s2s.infer`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import app, flags

from flax_s2s.cli import common
from flax_s2s.data.decode_input import INPUT_FORMATS
from flax_s2s.infer import OUTPUT_FORMATS, decode_file


def define_flags() -> None:
    """The command's flags, defined only when it runs (see `flax_s2s.cli`)."""
    common.define_checkpoint_flags("Decode")
    flags.DEFINE_integer("beam", 0, "Beam width; 0 (default) decodes greedily, 1 is a beam of one.")
    flags.DEFINE_float("alpha", 0.6,
                       "Length-penalty exponent for beam search, ((5 + len) / 6) ** alpha.")
    flags.DEFINE_string("input", None, "File with one source per line (default: stdin).")
    flags.DEFINE_boolean("strict", False, "Fail at the first line that cannot be decoded (not "
                         "UTF-8, empty, too long) instead of printing an empty line for it.")
    flags.DEFINE_integer("nbest", 0, "Print the N best hypotheses of each line, one per line as "
                         "index<TAB>score<TAB>text (index: input line from 0); 0: the best text only.")
    flags.DEFINE_enum("format", "text", list(OUTPUT_FORMATS), "text, or jsonl: one JSON object "
                      "per input line with its hypotheses' texts, tokens, lengths and scores.")
    flags.DEFINE_integer("min_len", 0, "The fewest output tokens before EOS.")
    flags.DEFINE_boolean("no_sort", False, "Batch lines in input order instead of by source "
                         "length (the outputs are the same; sorted batches decode faster).")
    flags.DEFINE_string("prefix", None, "File of target prefixes, one per input line (an empty "
                        "line: none): each output starts with its line's prefix, and its score "
                        "counts it.")
    flags.DEFINE_enum("input_format", "auto", list(INPUT_FORMATS), "text: one source per line; "
                      "jsonl: one JSON object per line, its source in the run's src_field or its "
                      "context_field list of turns (the latest that fit); auto: jsonl for an "
                      "--input ending in .jsonl, else text.")
    flags.DEFINE_string("prefix_field", None, "With JSON lines input: the field of each row that "
                        "holds its target prefix (a string; \"\": none).")
    flags.DEFINE_string("forced_bos", "", "The first token of every output, by name or id (mBART: "
                        "the target language code, ro_RO); default: the run's config.forced_bos; "
                        "none: no forced token.")
    common.define_mbr_flags()
    common.define_control_flags()
    flags.adopt_module_key_flags(common)  # --help lists the shared flags too


def main(argv: Sequence[str]) -> None:
    common.start(argv)
    args = flags.FLAGS
    common.print_lines(lambda: decode_file(
        args.workdir, args.input, args.beam, args.alpha, args.batch_size, args.step, args.average,
        args.strict, args.nbest, args.format, args.min_len, not args.no_sort,
        progress=sys.stderr.isatty(), mbr_settings=common.mbr_settings(args),
        raw_weights=args.raw_weights, controls=common.generation_controls(args),
        prefix_path=args.prefix, input_format=args.input_format, prefix_field=args.prefix_field,
        forced_bos=args.forced_bos))


def run() -> None:
    """The command: `python -m flax_s2s.cli.decode ...`, `flax-s2s-decode ...`."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
