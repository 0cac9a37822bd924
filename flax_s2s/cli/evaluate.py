"""`python -m flax_s2s.cli.evaluate --workdir DIR (--data FILE | --split S) [--beam N] ...` (or
`flax-s2s-evaluate`): WER, PER and exact match of a workdir, an average of its checkpoints or an
ensemble of workdirs on a `WORD<TAB>PHONES` file, or the run's text metrics (`--metrics`: BLEU,
chrF, ROUGE, ...) on a split of its own task (`flax_s2s.evaluate`); `--diagnose` adds the
exposure-bias diagnostics, written to WORKDIR/diagnostics.json or `--diagnostics_out`."""

from __future__ import annotations

import json
import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

from absl import app, flags

from flax_s2s import diagnostics
from flax_s2s.cli import common
from flax_s2s.evaluate import LEXICON_METRICS, check_diagnose, evaluate_lexicon
from flax_s2s.outputs import OutputError, check_output, writing_file
from flax_s2s.reference_eval import METRIC_NAMES
from flax_s2s.workdirs import WorkdirError


def define_flags() -> None:
    """The command's flags, defined only when it runs (see `flax_s2s.cli`)."""
    flags.DEFINE_string("workdir", None, "A training workdir (checkpoints, vocabularies).")
    flags.DEFINE_string("data", None, "A WORD<TAB>PHONES file; alternatives on separate lines.")
    flags.DEFINE_string("split", None, "Instead of --data: a split of the run's own task.")
    flags.DEFINE_integer("beam", 0, "Beam width; 0 (default) decodes greedily, 1 is a beam of one.")
    flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
    flags.DEFINE_integer(
        "average", 1, "Average the variables of this many kept checkpoints, ending at --step."
    )
    flags.DEFINE_multi_string(
        "ensemble", [], "Another workdir whose model decodes together with --workdir's "
        "(repeatable); each member uses its latest checkpoint, or the mean of its --average newest."
    )
    flags.DEFINE_integer("batch_size", 0, "Words per decode batch. 0: the config's eval_batch_size.")
    common.define_mbr_flags()
    common.define_control_flags()
    flags.DEFINE_list("metrics", None, "Metrics to report, comma-separated, from "
                      f"{','.join(METRIC_NAMES)} (rouge: ROUGE-1/2/L/Lsum). Default: wer,per,"
                      "exact_match on --data; on --split the run's config.text_metrics and "
                      "exact_match.")
    flags.DEFINE_boolean("raw_weights", False, "Score the trained parameters, not their moving "
                         "average where the run kept one (config.ema_decay > 0).")
    flags.DEFINE_list("diagnose", [], "Exposure-bias diagnostics to run on the same data, from "
                      f"{','.join(diagnostics.DIAGNOSES)}: recovery after one wrong token in the "
                      "gold prefix, by distance; the error rate of the decoded outputs after an "
                      "earlier error against after none.")
    flags.DEFINE_integer("max_distance", 10, "--diagnose=recovery: the largest distance from "
                         "the replaced token recorded.")
    flags.DEFINE_string("diagnostics_out", None, "The JSON file of --diagnose (default: "
                        f"WORKDIR/{diagnostics.RECORD_FILE}, which the report draws).")
    flags.DEFINE_boolean("overwrite", False, "Replace an earlier --diagnose record.")
    flags.mark_flags_as_required(["workdir"])
    flags.mark_flags_as_mutual_exclusive(["data", "split"], required=True)


def main(argv: Sequence[str]) -> None:
    common.start(argv)
    args = flags.FLAGS
    out = args.diagnostics_out or os.path.join(args.workdir, diagnostics.RECORD_FILE)
    try:
        check_diagnose(args.diagnose, args.max_distance, args.ensemble)
        if args.diagnose:  # before the evaluation, not after it
            try:
                check_output(out, directory=False, overwrite=args.overwrite, ours=_is_record,
                             protected=[args.data])
            except OutputError as error:
                raise ValueError(_named(error)) from None
        result = evaluate_lexicon(args.workdir, args.data, args.beam, args.batch_size, args.split,
                                  args.step, args.average, tuple(args.ensemble),
                                  common.mbr_settings(args), args.raw_weights, args.metrics,
                                  common.generation_controls(args), args.diagnose,
                                  args.max_distance)
    except (ValueError, FileNotFoundError, WorkdirError) as error:  # bad input: the message says it all
        raise SystemExit(f"error: {error}") from None
    source = args.data or f"split {args.split!r}"
    averaged = result["averaged_steps"]
    checkpoint = (f"mean of checkpoints {', '.join(map(str, averaged))}" if len(averaged) > 1
                  else f"checkpoint step {result['step']}")
    member_steps = ", ".join(map(str, result["member_steps"]))
    members = (f", ensembled with {len(args.ensemble)} more workdir(s) (checkpoint steps "
               f"{member_steps})" if args.ensemble else "")
    unit = "words" if set(result["metric_names"]) <= set(LEXICON_METRICS) else "sources"
    decoding = (f"MBR over {args.mbr} {args.mbr_source} candidates ({args.mbr_utility})"
                if args.mbr else "greedy" if args.beam == 0 else f"beam {args.beam}")
    print(f"{source}: {result['words']} {unit}, {checkpoint}{members}, {decoding}")
    for name in result["metric_names"]:
        print(format_metric(name, result[name]))
    if args.diagnose:
        record = {**result["diagnostics"], "workdir": args.workdir, "source": source,
                  "decoding": decoding}
        try:
            write_record(out, record, args.overwrite, [args.data])
        except (OutputError, OSError) as error:
            raise SystemExit(f"error: {_named(error)}") from None
        print_diagnostics(record)
        print(f"wrote {out}")


# The name each metric prints under.
_LABELS = {"wer": "WER", "per": "PER", "exact_match": "exact match", "bleu": "BLEU", "chrf": "chrF",
           "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}


def format_metric(name: str, value: float) -> str:
    """One metric's line: error rates and exact match in percent ("WER 12.34%"), scores on their
    0-100 scale ("BLEU 27.10", "ROUGE-1 41.20")."""
    label = _LABELS.get(name, name)
    if name == "exact_match":
        return f"{label} {100 * value:.2f}%"
    return f"{label} {value:.2f}%" if name in ("wer", "per") else f"{label} {value:.2f}"


def _named(error: Exception) -> str:
    """An output error's message naming this command's flag for the record's path."""
    return str(error).replace("another --out", "another --diagnostics_out")


def _is_record(path: pathlib.Path) -> bool:
    """Whether the file `path` is an earlier diagnostics record (the only file --overwrite
    replaces)."""
    try:
        return json.loads(path.read_text()).get("kind") == diagnostics.RECORD_KIND
    except (OSError, ValueError, AttributeError):
        return False


def write_record(out: str, record: dict[str, Any], overwrite: bool,
                 protected: Sequence[str | None] = ()) -> None:
    """The diagnostics record as JSON at `out`, written beside it and renamed into place; an
    existing file replaced only with `overwrite` and only when it is an earlier record."""
    with writing_file(out, overwrite=overwrite, ours=_is_record, protected=protected) as partial:
        text = json.dumps(record, indent=1)
        # each list of numbers on one line
        text = re.sub(r"\[([^\[\]{}]*)\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
        partial.write_text(text + "\n")


def print_diagnostics(record: dict[str, Any]) -> None:
    """The diagnostics' headline numbers, one line each."""
    for corruption, curve in record.get("recovery", {}).items():
        relative = ", ".join("-" if r is None else f"{r:.3f}" for r in curve["relative"][:5])
        print(f"recovery after a {corruption} token: accuracy relative to the clean prefix at "
              f"distance 1..: {relative}")
    rates = record.get("error_after_error")
    if rates:
        def percent(rate):
            return "-" if rate is None else f"{100 * rate:.2f}%"

        print(f"error rate after an earlier error {percent(rates['rate_after_error'])} "
              f"({rates['positions_after_error']} positions), after none "
              f"{percent(rates['rate_after_clean'])} ({rates['positions_after_clean']} positions)")


def run() -> None:
    """The command: `python -m flax_s2s.cli.evaluate ...`, `flax-s2s-evaluate ...`."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
