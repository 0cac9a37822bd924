"""Decode each unique source of a split once and score the text against all its references.

Training's eval (`training.evaluate`) and the `flax_s2s.evaluate` CLI share this: WER/PER for
G2P, BLEU/chrF for text. Scoring runs on the host from decoded tokens; the jitted decoding is
compiled once per (batch, source length, max_len).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from flax_s2s import decoding, metrics
from flax_s2s.data.pipeline import GroupedReferences
from flax_s2s.data.vocab import PAD, Vocab
from flax_s2s.models import Seq2Seq

# name -> (scorer, whether it reads token lists (True) or whole strings (False))
_SCORERS: dict[str, tuple[Callable[..., float], bool]] = {
    "wer": (metrics.word_error_rate, True),
    "per": (metrics.phone_error_rate, True),
    "exact_match": (metrics.exact_match, True),
    "bleu": (metrics.bleu, False),
    "chrf": (metrics.chrf, False),
}


def decode_sources(
    model: Seq2Seq,
    variables: Any,
    src: np.ndarray,
    batch_size: int,
    max_len: int,
    beam_size: int = 1,
    alpha: float = 0.6,
) -> np.ndarray:
    """Output tokens [n, max_len] (PAD after EOS) for sources [n, src_len], in batches of a
    static shape (the last one padded with PAD rows, whose outputs are dropped)."""
    outputs = []
    for start in range(0, len(src), batch_size):
        batch = src[start : start + batch_size]
        rows = len(batch)
        batch = np.pad(batch, ((0, batch_size - rows), (0, 0)), constant_values=PAD)
        tokens = _decode(model, variables, batch, max_len, beam_size, alpha)
        outputs.append(np.asarray(jax.device_get(tokens))[:rows])
    return np.concatenate(outputs)


def check_beam_size(beam_size: int) -> None:
    """Fails early, before anything loads, for an impossible beam size."""
    if beam_size < 1:
        raise ValueError(f"beam size must be >= 1 (1 decodes greedily), got {beam_size}")


def _decode(model: Seq2Seq, variables: Any, src_tokens: np.ndarray, max_len: int, beam_size: int,
            alpha: float = 0.6):
    check_beam_size(beam_size)
    # beam 1 is exactly greedy (tested); greedy skips the beam bookkeeping
    return decoding.best_sequences(model, variables, src_tokens, max_len, 0 if beam_size == 1
                                   else beam_size, alpha)


def score_texts(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    names: Sequence[str],
    separator: str,
) -> dict[str, float]:
    """The metrics `names` of decoded texts against their references.

    Error rates count units: characters when `separator` is "" (a character vocabulary), else
    whitespace-separated tokens (phones, words).
    """
    def units(text: str) -> list[str]:
        return list(text) if separator == "" else text.split()

    unknown = sorted(set(names) - set(_SCORERS))
    if unknown:
        raise ValueError(f"unknown text metric(s) {unknown}; known: {sorted(_SCORERS)}")
    results = {}
    for name in names:
        scorer, tokenized = _SCORERS[name]
        if tokenized:
            results[name] = scorer(
                [units(h) for h in hypotheses], [[units(r) for r in refs] for refs in references]
            )
        else:
            results[name] = scorer(hypotheses, references)
    return results


def evaluate_references(
    model: Seq2Seq,
    variables: Any,
    grouped: GroupedReferences,
    tgt_vocab: Vocab,
    names: Sequence[str],
    batch_size: int,
    max_len: int,
    beam_size: int = 1,
    alpha: float = 0.6,
) -> dict[str, float]:
    """Decodes every unique source of `grouped` and scores it against all of its references."""
    tokens = decode_sources(model, variables, grouped.src, batch_size, max_len, beam_size, alpha)
    hypotheses = [tgt_vocab.decode(row) for row in tokens]
    return score_texts(hypotheses, grouped.references, names, tgt_vocab.separator)
