"""`python -m flax_s2s.cli.evaluate --workdir DIR (--data FILE | --split S) [--beam N] ...` (or
`flax-s2s-evaluate`): WER, PER and exact match of a workdir, an average of its checkpoints or an
ensemble of workdirs on a `WORD<TAB>PHONES` file (`flax_s2s.evaluate`)."""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from flax_s2s.cli import common
from flax_s2s.evaluate import evaluate_lexicon
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
                                  common.mbr_settings(args), args.raw_weights,
                                  common.generation_controls(args))
    except (ValueError, FileNotFoundError, WorkdirError) as error:  # bad input: the message says it all
        raise app.UsageError(str(error)) from None
    source = args.data or f"split {args.split!r}"
    averaged = result["averaged_steps"]
    checkpoint = (f"mean of checkpoints {', '.join(map(str, averaged))}" if len(averaged) > 1
                  else f"checkpoint step {result['step']}")
    member_steps = ", ".join(map(str, result["member_steps"]))
    members = (f", ensembled with {len(args.ensemble)} more workdir(s) (checkpoint steps "
               f"{member_steps})" if args.ensemble else "")
    print(f"{source}: {result['words']} words, {checkpoint}{members}, "
          + (f"MBR over {args.mbr} {args.mbr_source} candidates ({args.mbr_utility})" if args.mbr
             else "greedy" if args.beam == 0 else f"beam {args.beam}"))
    print(f"WER {result['wer']:.2f}%")
    print(f"PER {result['per']:.2f}%")
    print(f"exact match {100 * result['exact_match']:.2f}%")


def run() -> None:
    """The command: `python -m flax_s2s.cli.evaluate ...`, `flax-s2s-evaluate ...`."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
