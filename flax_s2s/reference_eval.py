"""Decode each unique source of a split once and score the text against all its references.

Training's eval (`training.evaluate`) and the `flax_s2s.evaluate` CLI share this: WER/PER for
G2P, BLEU/chrF for translation, ROUGE for summaries. Scoring runs on the host from decoded
tokens; the jitted decoding is compiled once per (batch, source length, max_len).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from flax_s2s import decoding, metrics
from flax_s2s.data.pipeline import GroupedReferences
from flax_s2s.data.vocab import Vocab, split_symbols
from flax_s2s.models import Seq2Seq

# name -> (scorer, whether it reads token lists (True) or whole strings (False)); a scorer gives
# one number, or several by name ("rouge": rouge1, rouge2, rougeL, rougeLsum)
_SCORERS: dict[str, tuple[Callable[..., float | dict[str, float]], bool]] = {
    "wer": (metrics.word_error_rate, True),
    "per": (metrics.phone_error_rate, True),
    "exact_match": (metrics.exact_match, True),
    "bleu": (metrics.bleu, False),
    "chrf": (metrics.chrf, False),
    "rouge": (metrics.rouge, False),
}
METRIC_NAMES = tuple(_SCORERS)
"""The names `score_texts` takes: `metrics.TEXT_METRICS` and `exact_match`."""


def decode_sources(
    decode: Callable[[np.ndarray], Any], src: np.ndarray, batch_size: int
) -> np.ndarray:
    """Output tokens [n, max_len] (PAD after EOS) for sources [n, src_len], in batches of a
    static shape (the last one filled up with copies of its last source, whose outputs are
    dropped: real sources, so no pad id is needed here).

    `decode` maps src_tokens [batch_size, src_len] to tokens [batch_size, max_len]: e.g.
    `best_decoder(model, variables, ...)`, or a training run's jitted, sharded decode.
    """
    outputs = []
    for start in range(0, len(src), batch_size):
        batch = src[start : start + batch_size]
        rows = len(batch)
        batch = np.pad(batch, ((0, batch_size - rows), (0, 0)), mode="edge")
        outputs.append(np.asarray(jax.device_get(decode(batch)))[:rows])
    return np.concatenate(outputs)


def best_decoder(
    model: Seq2Seq, variables: Any, max_len: int, beam_size: int = 0, alpha: float = 0.6,
    controls: decoding.GenerationControls | None = None,
) -> Callable[[np.ndarray], Any]:
    """src_tokens -> the one output per source that evaluation scores (`decoding.best_sequences`:
    greedy when beam_size is 0, else the best of a beam of that width, under `controls`)."""
    check_beam_size(beam_size)
    return functools.partial(decoding.best_sequences, model, variables, max_len=max_len,
                             beam_size=beam_size, alpha=alpha, controls=controls)


def check_beam_size(beam_size: int) -> None:
    """Fails early, before anything loads, for an impossible beam size."""
    if beam_size < 0:
        raise ValueError(f"beam size must be >= 0 (0 decodes greedily, 1 is a beam of one), "
                         f"got {beam_size}")


def score_texts(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    names: Sequence[str],
    separator: str,
) -> dict[str, float]:
    """The metrics `names` of decoded texts against their references, by name ("rouge" gives
    `metrics.ROUGE_TYPES`).

    Error rates count units: the symbols `vocab.split_symbols` gives (characters when `separator`
    is "", else the pieces between separators: phones, words).
    """
    unknown = sorted(set(names) - set(_SCORERS))
    if unknown:
        raise ValueError(f"unknown text metric(s) {unknown}; known: {sorted(_SCORERS)}")
    results = {}
    for name in names:
        scorer, tokenized = _SCORERS[name]
        if tokenized:
            value = scorer(
                [split_symbols(h, separator) for h in hypotheses],
                [[split_symbols(r, separator) for r in refs] for refs in references],
            )
        else:
            value = scorer(hypotheses, references)
        results.update(value if isinstance(value, dict) else {name: value})
    return results


def score_outputs(
    tokens: np.ndarray, grouped: GroupedReferences, tgt_vocab: Vocab, names: Sequence[str]
) -> dict[str, float]:
    """The metrics `names` of decoded outputs [n_sources, max_len], one per source of `grouped`
    in its order, against all of that source's references."""
    hypotheses = [tgt_vocab.decode(row) for row in tokens]
    return score_texts(hypotheses, grouped.references, names, tgt_vocab.separator)


def evaluate_references(
    model: Seq2Seq,
    variables: Any,
    grouped: GroupedReferences,
    tgt_vocab: Vocab,
    names: Sequence[str],
    batch_size: int,
    max_len: int,
    beam_size: int = 0,
    alpha: float = 0.6,
    controls: decoding.GenerationControls | None = None,
) -> dict[str, float]:
    """Decodes every unique source of `grouped` once and scores it against all of its references
    (beam_size 0: greedy; `controls`: the generation controls)."""
    decode = best_decoder(model, variables, max_len, beam_size, alpha, controls)
    return score_outputs(decode_sources(decode, grouped.src, batch_size), grouped, tgt_vocab, names)
