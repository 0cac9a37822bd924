"""One (source, target) pair's token ids under the length policy, and the counts of what a split
lost to the limits.

`encode_pair` is the whole rule, one pair at a time, so that a split tokenized into memory
(`pipeline.tokenize`) and one read in chunks apply the same one:
- a training split (`Limits.evaluated` False) applies `too_long` to a pair over the limits:
  "drop" it (counted), "error" (naming it), or "truncate": the source cut to `max_src_len` (its
  last id EOS where sources end in EOS), the target cut to `max_tgt_len` ending in EOS;
- an evaluated split keeps every pair under every policy: a source over the limit is cut as
  above, a target is cut to its first `max_tgt_len` ids (the gold tokens the teacher-forced
  metrics score), and the caller keeps the whole reference text for the text metrics;
- a `dialogue.Dialogue` source keeps its latest turns that fit (`dialogue.fit_turns`) before any
  of that; only when its latest turn alone is over does the policy apply (to that turn).
"""

from __future__ import annotations

import dataclasses

from flax_s2s.data.dialogue import Dialogue, fit_turns
from flax_s2s.data.vocab import Vocab

# What a training split does with a pair over the limits (an evaluated split keeps every pair).
TOO_LONG_POLICIES = ("drop", "error", "truncate")


class LengthError(ValueError):
    """A pair that the length policy refuses (too_long="error", or an empty source)."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """The lengths a split is tokenized to and what happens over them.

    max_src_len / max_tgt_len: ids per source (EOS included with `src_eos`) / target (EOS
      included). too_long: one of TOO_LONG_POLICIES. src_eos: sources end in EOS
      (`config.vocab.src_eos`). evaluated: the split is scored, so no pair is dropped.
    """

    max_src_len: int
    max_tgt_len: int
    too_long: str = "drop"
    src_eos: bool = False
    evaluated: bool = False

    def __post_init__(self) -> None:
        if self.too_long not in TOO_LONG_POLICIES:
            raise ValueError(f"too_long must be one of {list(TOO_LONG_POLICIES)}, got {self.too_long!r}")


@dataclasses.dataclass(frozen=True)
class EncodedPair:
    """One pair's ids within the limits: `src` (no padding), `tgt` (ending in EOS unless an
    evaluated target was cut); `cut_source`: the ids are not the whole source's (tokens or
    dialogue turns left out); `cut_target`; `cut_turns`: earlier dialogue turns left out."""

    src: list[int]
    tgt: list[int]
    cut_source: bool = False
    cut_target: bool = False
    cut_turns: int = 0


def encode_source(vocab: Vocab, text: str, eos: bool = False) -> list[int]:
    """A source text's ids: without EOS (flax_s2s's default), or ending in EOS with `eos`
    (`config.vocab.src_eos`: how T5 and BART were pretrained, and fairseq's default). Training,
    evaluation and the decode CLI all encode sources here."""
    return vocab.encode(text, add_eos=eos)


def fit_source(vocab: Vocab, text: str, max_len: int, eos: bool = False) -> tuple[list[int], int]:
    """(ids, turns cut): a source's ids (`encode_source`); for a `Dialogue` over `max_len`, those
    of its latest turns that fit (`dialogue.fit_turns`). The ids may still be over `max_len`."""
    if isinstance(text, Dialogue):
        return fit_turns(text, lambda part: encode_source(vocab, part, eos), max_len)
    return encode_source(vocab, text, eos), 0


def cut_ids(ids: list[int], max_len: int, eos: int | None = None) -> list[int]:
    """`ids` cut to `max_len`; with `eos`, a cut sequence ends in it (its last id replaced)."""
    if len(ids) <= max_len:
        return ids
    return ids[: max_len - 1] + [eos] if eos is not None else ids[:max_len]


def source_within(vocab: Vocab, text: str, max_len: int, eos: bool = False) -> tuple[list[int], bool]:
    """(ids, cut): a source as an evaluated split reads it, fitted (`fit_source`) and cut to
    `max_len` (its last id EOS with `eos`); `cut` says whether any of it was left out."""
    ids, turns = fit_source(vocab, text, max_len, eos)
    cut = turns > 0 or len(ids) > max_len
    return cut_ids(ids, max_len, vocab.special_tokens.eos if eos else None), cut


def encode_pair(
    src_text: str, tgt_text: str, src_vocab: Vocab, tgt_vocab: Vocab, limits: Limits
) -> EncodedPair | None:
    """One pair's ids under `limits` (see the module's docstring), or None where a training
    split drops it. Raises LengthError for a pair that too_long="error" refuses, and for an empty
    source (no ids) in an evaluated split."""
    src_ids, cut_turns = fit_source(src_vocab, src_text, limits.max_src_len, limits.src_eos)
    tgt_ids = tgt_vocab.encode(tgt_text, add_eos=True)
    src_over, tgt_over = len(src_ids) > limits.max_src_len, len(tgt_ids) > limits.max_tgt_len
    if not src_ids:
        if limits.evaluated or limits.too_long == "error":
            raise LengthError(f"an empty source (no tokens): {src_text!r} -> {tgt_text!r}")
        return None
    if (src_over or tgt_over) and not limits.evaluated and limits.too_long != "truncate":
        if limits.too_long == "drop":
            return None
        raise LengthError(
            f"source length {len(src_ids)} (max_src_len={limits.max_src_len}) / target length "
            f"{len(tgt_ids)} incl. EOS (max_tgt_len={limits.max_tgt_len}): {src_text!r} -> "
            f"{tgt_text!r}"
        )
    src_eos = src_vocab.special_tokens.eos if limits.src_eos else None
    tgt_eos = None if limits.evaluated else tgt_vocab.special_tokens.eos  # gold ids, not an end
    return EncodedPair(
        src=cut_ids(src_ids, limits.max_src_len, src_eos),
        tgt=cut_ids(tgt_ids, limits.max_tgt_len, tgt_eos),
        cut_source=src_over or cut_turns > 0, cut_target=tgt_over, cut_turns=cut_turns,
    )


@dataclasses.dataclass
class CutCounts:
    """What a split lost to the limits, counted pair by pair (`add`) and printed (`report`)."""

    pairs: int = 0
    dropped: int = 0
    cut_sources: int = 0
    cut_targets: int = 0
    cut_dialogues: int = 0  # dialogues whose earlier turns were left out
    cut_turns: int = 0

    def add(self, encoded: EncodedPair | None) -> None:
        self.pairs += 1
        if encoded is None:
            self.dropped += 1
            return
        self.cut_sources += encoded.cut_source
        self.cut_targets += encoded.cut_target
        self.cut_dialogues += encoded.cut_turns > 0
        self.cut_turns += encoded.cut_turns

    def report(self, split: str, limits: Limits) -> None:
        """Prints one line for each kind of loss there was."""
        where = f"split {split!r}:"
        lengths = f"max_src_len={limits.max_src_len} / max_tgt_len={limits.max_tgt_len}"
        if self.dropped:
            print(f"{where} dropped {self.dropped} of {self.pairs} examples longer than {lengths} "
                  "(or with an empty source)")
        if self.cut_dialogues:
            print(f"{where} cut the history of {self.cut_dialogues} dialogues ({self.cut_turns} "
                  f"earlier turns) to fit max_src_len={limits.max_src_len}")
        if self.cut_sources or self.cut_targets:
            kept = ("; every example kept (an evaluated split drops none; text metrics score the "
                    "whole references)" if limits.evaluated else "")
            print(f"{where} cut {self.cut_sources} sources and {self.cut_targets} targets of "
                  f"{self.pairs} examples to {lengths}{kept}")
