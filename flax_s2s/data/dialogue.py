"""Dialogue sources: the turns of a conversation joined into one source text, and the latest turns
that fit a length limit.

A `Dialogue` is the joined text (a `str`, so vocabularies, grouping and reports read it as any
source) that remembers its turns, so that tokenization can cut the history from the left at turn
boundaries instead of cutting the text anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# Between two turns. A visible piece that every vocabulary here keeps as a token of its own (a
# symbol vocabulary of characters or of space-separated words, SentencePiece as "▁|", byte-level
# BPE), unlike "\n", which SentencePiece's default normalisation turns into a space, or "</s>",
# which a text tokenizer reads as plain characters rather than as the EOS id.
DEFAULT_SEPARATOR = " | "


class Dialogue(str):
    """The turns of a conversation, oldest first, joined by `separator`; the text is the source.

    `turns` (tuple of str) and `separator` are kept beside the text.
    """

    turns: tuple[str, ...]
    separator: str

    def __new__(cls, turns: Sequence[str], separator: str = DEFAULT_SEPARATOR) -> Dialogue:
        if not turns:
            raise ValueError("a dialogue needs at least one turn")
        text = super().__new__(cls, separator.join(turns))
        text.turns, text.separator = tuple(turns), separator
        return text

    def __reduce__(self):
        return Dialogue, (self.turns, self.separator)


def join_turns(turns: Sequence[str], separator: str = DEFAULT_SEPARATOR) -> Dialogue:
    """One source from the turns of a conversation (oldest first): `separator.join(turns)`."""
    return Dialogue(turns, separator)


def fit_turns(
    dialogue: Dialogue, encode: Callable[[str], list[int]], max_len: int
) -> tuple[list[int], int]:
    """(ids, turns cut): the ids of the latest turns that fit in `max_len` tokens, joined, and
    how many earlier turns were left out.

    The whole dialogue when it fits; else turns are added from the latest back while their joined
    ids still fit. When even the latest turn alone is over `max_len`, its ids (over the limit,
    for the caller's length policy) with every earlier turn cut.
    """
    ids = encode(str(dialogue))
    turns = dialogue.turns
    if len(ids) <= max_len or len(turns) == 1:
        return ids, 0
    best = encode(turns[-1]), len(turns) - 1
    for keep in range(2, len(turns)):  # all len(turns) turns are over
        candidate = encode(dialogue.separator.join(turns[-keep:]))
        if len(candidate) > max_len:
            break
        best = candidate, len(turns) - keep
    return best
