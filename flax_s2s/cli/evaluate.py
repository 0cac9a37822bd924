"""`python -m flax_s2s.cli.evaluate --workdir DIR (--data FILE | --split S) [--beam N] ...` (or
`flax-s2s-evaluate`): WER, PER and exact match of a workdir, an average of its checkpoints or an
ensemble of workdirs on a `WORD<TAB>PHONES` file, or the run's text metrics (`--metrics`: BLEU,
chrF, ROUGE, ...) on a split of its own task (`flax_s2s.evaluate`)."""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from flax_s2s.cli import common
from flax_s2s.evaluate import LEXICON_METRICS, evaluate_lexicon
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
    flags.mark_flags_as_required(["workdir"])
    flags.mark_flags_as_mutual_exclusive(["data", "split"], required=True)


def main(argv: Sequence[str]) -> None:
    common.start(argv)
    args = flags.FLAGS
    try:
        result = evaluate_lexicon(args.workdir, args.data, args.beam, args.batch_size, args.split,
                                  args.step, args.average, tuple(args.ensemble),
                                  common.mbr_settings(args), args.raw_weights, args.metrics,
                                  common.generation_controls(args))
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
    print(f"{source}: {result['words']} {unit}, {checkpoint}{members}, "
          + (f"MBR over {args.mbr} {args.mbr_source} candidates ({args.mbr_utility})" if args.mbr
             else "greedy" if args.beam == 0 else f"beam {args.beam}"))
    for name in result["metric_names"]:
        print(format_metric(name, result[name]))


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


def run() -> None:
    """The command: `python -m flax_s2s.cli.evaluate ...`, `flax-s2s-evaluate ...`."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
