"""What the commands share: their start (no stray arguments, quiet libraries), and the MBR and
generation-control flags of the decode and evaluate commands."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from absl import app, flags, logging

from flax_s2s.decoding import GenerationControls
from flax_s2s.mbr import SOURCES, UTILITIES, MBRSettings


def start(argv: Sequence[str]) -> None:
    """Refuses positional arguments; quiets orbax and grain (they log every restore at INFO)
    unless --verbosity is given."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def define_checkpoint_flags(verb: str) -> None:
    """--workdir and the flags that choose its variables, for a command that `verb`s ("Decode",
    "Score") with a trained workdir."""
    flags.DEFINE_string("workdir", None, "A training workdir with checkpoints.")
    flags.DEFINE_integer("batch_size", 64, f"Lines per batch ({verb.lower()}d together).")
    flags.DEFINE_integer("step", None, f"Checkpoint step to {verb.lower()} with (default: the "
                         "newest).")
    flags.DEFINE_integer("average", 1, f"{verb} with the mean variables of this many kept "
                         "checkpoints, ending at --step.")
    flags.DEFINE_boolean("raw_weights", False, f"{verb} with the trained parameters, not their "
                         "moving average where the run kept one (config.ema_decay > 0).")
    flags.mark_flags_as_required(["workdir"])


def print_lines(produce: Callable[[], Iterable[str]]) -> None:
    """Prints the lines `produce` returns; a problem with the workdir or the input it names
    (WorkdirError, InputError, FileFormatError, ValueError) ends the command in one `error:` line."""
    from flax_s2s.errors import FileFormatError
    from flax_s2s.input_lines import InputError
    from flax_s2s.workdirs import WorkdirError

    try:
        outputs = produce()
    except (WorkdirError, InputError, FileFormatError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    for output in outputs:
        print(output)


def define_mbr_flags() -> None:
    """--mbr N and the settings that go with it."""
    flags.DEFINE_integer("mbr", 0, "MBR decoding over this many candidates per input (0: off): "
                         "the candidate with the highest mean utility against the others.")
    flags.DEFINE_enum("mbr_source", "sample", list(SOURCES), "MBR candidates: sampled, or the "
                      "N-best of a beam of width --mbr.")
    flags.DEFINE_enum("mbr_utility", "chrf", list(UTILITIES), "MBR utility: chrF, sentence BLEU, "
                      "edit similarity over the output symbols, or exact match.")
    flags.DEFINE_float("temperature", 1.0, "Sampling temperature of the MBR candidates (> 0).")
    flags.DEFINE_float("top_p", 1.0, "Nucleus mass of the MBR candidates' sampling, in (0, 1].")
    flags.DEFINE_integer("seed", 0, "Seed of the MBR candidates' sampling keys.")


def mbr_settings(values: Any) -> MBRSettings | None:
    """The MBRSettings the parsed flags ask for, or None without --mbr; ValueError naming the
    flag for an impossible value."""
    if values.mbr < 0:
        raise ValueError(f"--mbr={values.mbr}: must be >= 0 (0: no MBR)")
    if values.mbr == 0:
        return None
    return MBRSettings(values.mbr, values.mbr_source, values.mbr_utility, values.temperature,
                       values.top_p, values.seed)


def define_control_flags() -> None:
    """The generation controls (`flax_s2s.decoding.GenerationControls`), for every search."""
    flags.DEFINE_integer("no_repeat_ngram_size", 0, "No n-gram of this size occurs twice in an "
                         "output (0: off).")
    flags.DEFINE_float("repetition_penalty", 1.0, "Logits of tokens already in the output are "
                       "divided by this when positive, multiplied when negative (1: off; > 0).")
    flags.DEFINE_float("max_len_a", 0.0, "Each output ends by floor(a * source length + b) "
                       "tokens (with --max_len_b; both 0: the model's max_tgt_len).")
    flags.DEFINE_float("max_len_b", 0.0, "See --max_len_a.")


def generation_controls(values: Any) -> GenerationControls:
    """The GenerationControls the parsed flags ask for; ValueError naming the flag for an
    impossible value (a NaN, an infinity, a penalty <= 0, a negative n-gram size)."""
    try:
        return GenerationControls(values.no_repeat_ngram_size, values.repetition_penalty,
                                  values.max_len_a, values.max_len_b)
    except ValueError as error:
        raise ValueError(f"--{error}") from None
