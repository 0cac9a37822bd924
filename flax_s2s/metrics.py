"""Losses and metrics. PAD positions (the model's pad id) never count.

On padded target batches (jitted): the functions return sums and counts, not means, so values from
several batches (and the padded rows of the last eval batch, whose weight is 0) combine exactly.

On decoded text (host, multi-reference): word and phone error rates (the G2P metrics: an output is
right if it equals any of its references; edit distances by rapidfuzz), BLEU and chrF (sacrebleu),
ROUGE (Google's rouge-score package). BLEU, chrF and ROUGE are on a 0-100 scale.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import sacrebleu
from rapidfuzz.distance import Levenshtein

from flax_s2s.special_tokens import DEFAULT_SPECIAL_TOKENS

Array = jax.Array


def token_weights(
    tgt_tokens: Array, example_weights: Array | None = None, *, pad: int = DEFAULT_SPECIAL_TOKENS.pad
) -> Array:
    """1.0 at target positions that are not `pad` (the model's: `model.special_tokens.pad`), in
    examples with weight 1. tgt_tokens [batch, tgt_len], example_weights [batch] -> [batch, tgt_len]."""
    weights = (tgt_tokens != pad).astype(jnp.float32)
    if example_weights is not None:
        weights = weights * example_weights[:, None]
    return weights


def cross_entropy_sum(
    logits: Array, tgt_tokens: Array, weights: Array, label_smoothing: float = 0.0
) -> Array:
    """Sum over weighted positions of -log p(target), label-smoothed over the vocabulary.

    logits [batch, tgt_len, vocab] float, tgt_tokens [batch, tgt_len] int, weights like tgt_tokens;
    label_smoothing a Python float. With smoothing s the target distribution is (1 - s) one-hot +
    s / vocab uniform, so the loss per position is (1 - s) * nll + s * mean over the vocabulary of
    -log p = (1 - s) * (lse - logit[target]) + s * (lse - mean(logits)), lse the logsumexp. The
    target's logit is gathered, so no [batch, tgt_len, vocab] one-hot (or smoothed label) array
    is built; log-softmax and logsumexp run in float32.
    """
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, tgt_tokens[..., None], -1)[..., 0]
    losses = lse - target_logit
    if label_smoothing:
        losses = (1.0 - label_smoothing) * losses + label_smoothing * (lse - logits.mean(-1))
    return (losses * weights).sum()


def correct_tokens(predicted: Array, tgt_tokens: Array, weights: Array) -> Array:
    """Weighted count of positions where predicted == target. Both [batch, tgt_len] int."""
    return ((predicted == tgt_tokens) * weights).sum()


def exact_matches(predicted: Array, tgt_tokens: Array, example_weights: Array) -> Array:
    """Weighted count of examples whose predicted tokens equal the targets at every position.

    Both must be PAD after EOS, as decoding returns them and batches store them.
    """
    return ((predicted == tgt_tokens).all(-1) * example_weights).sum()


def accuracy_by_position(predicted: Array, tgt_tokens: Array, weights: Array) -> tuple[Array, Array]:
    """(correct [tgt_len], counted [tgt_len]) summed over the batch, for exposure-bias plots."""
    return ((predicted == tgt_tokens) * weights).sum(0), weights.sum(0)


# --- text metrics on decoded outputs, each hypothesis against one or more references ---

Tokens = Sequence[str]


def _check_aligned(hypotheses: Sequence, references: Sequence[Sequence]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        raise ValueError("no hypotheses to score")
    empty = next((i for i, refs in enumerate(references) if not refs), None)
    if empty is not None:
        raise ValueError(f"item {empty} has no reference")


def exact_match(hypotheses: Sequence[Tokens], references: Sequence[Sequence[Tokens]]) -> float:
    """Fraction of hypotheses (token sequences) equal to at least one of their references."""
    _check_aligned(hypotheses, references)
    hits = sum(any(list(h) == list(r) for r in refs) for h, refs in zip(hypotheses, references, strict=True))
    return hits / len(hypotheses)


def word_error_rate(hypotheses: Sequence[Tokens], references: Sequence[Sequence[Tokens]]) -> float:
    """G2P word error rate in percent: the share of words (items) whose output equals none of its
    references. (Not the ASR WER, which is an edit rate; that is `phone_error_rate` over words.)"""
    return 100.0 * (1.0 - exact_match(hypotheses, references))


def phone_error_rate(hypotheses: Sequence[Tokens], references: Sequence[Sequence[Tokens]]) -> float:
    """Token edit rate in percent: sum over items of the Levenshtein distance to the closest
    reference, over the sum of those references' lengths (ties: the first reference listed)."""
    _check_aligned(hypotheses, references)
    errors = length = 0
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        distances = [Levenshtein.distance(list(hypothesis), list(r)) for r in refs]
        closest = min(range(len(refs)), key=distances.__getitem__)
        errors += distances[closest]
        length += len(refs[closest])
    return 100.0 * errors / max(length, 1)


def _reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-item reference lists -> sacrebleu's streams (one per reference slot, None when an item
    has fewer references)."""
    slots = max(len(refs) for refs in references)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(slots)]


def bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenization, 4-grams, exponential smoothing), 0-100."""
    _check_aligned(hypotheses, references)
    return sacrebleu.metrics.BLEU().corpus_score(list(hypotheses), _reference_streams(references)).score


def chrf(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus chrF (sacrebleu defaults: character 6-grams, beta=2), 0-100."""
    _check_aligned(hypotheses, references)
    return sacrebleu.metrics.CHRF().corpus_score(list(hypotheses), _reference_streams(references)).score


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
"""What `rouge` reports: unigram and bigram overlap, the longest common subsequence (LCS) of the
whole texts, and the summary-level LCS over their sentences (`sentences`)."""

# A sentence ends at ".", "!" or "?" (and any closing quotes or brackets after it) followed by
# whitespace, which becomes a line break.
_SENTENCE_END = re.compile(r"""([.!?]["'\)\]]*)\s+""")


def sentences(text: str) -> list[str]:
    """The sentences of `text` that ROUGE-Lsum compares, found without any downloaded model.

    A line break ends a sentence, and so do ".", "!" and "?" (with any closing quotes or brackets
    after them) before whitespace. That is T5's rule (`" . "` ends a sentence, for tokenized text)
    widened to untokenized text; Hugging Face's summarisation examples use NLTK's punkt model
    instead, which needs a download and knows abbreviations: here "e.g. this" is two sentences.
    Only rougeLsum depends on the split.
    """
    lines = _SENTENCE_END.sub("\\1\n", text).split("\n")
    return [line.strip() for line in lines if line.strip()]


def rouge(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """ROUGE-1, -2, -L and -Lsum F1 in percent (0-100, the scale of `bleu` and `chrf`), computed by
    Google's rouge-score package as T5X and Hugging Face call it:
    `rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=True)` (text lowercased, only a-z and 0-9
    kept, Porter stemming of words over 3 letters, as Hugging Face's summarisation examples ask;
    T5's `rouge` leaves stemming off unless asked), on texts with each of their `sentences` on a
    line of its own (which only rougeLsum reads).

    Several references: each hypothesis is scored against each of its references and keeps, per
    ROUGE type, the best F1 (the package's `score_multi`, which Hugging Face's `evaluate` uses for
    several references). The result is the mean over hypotheses; T5X and `evaluate` report the
    median of bootstrap resamples of that mean, which differs from it by sampling noise only.
    -> {"rouge1": ..., "rouge2": ..., "rougeL": ..., "rougeLsum": ...}.
    """
    _check_aligned(hypotheses, references)
    # Imported here: the package imports NLTK, about a second, which runs without ROUGE skip.
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        best = scorer.score_multi(["\n".join(sentences(r)) for r in refs],
                                  "\n".join(sentences(hypothesis)))
        for name in ROUGE_TYPES:
            totals[name] += best[name].fmeasure
    return {name: 100.0 * total / len(hypotheses) for name, total in totals.items()}


TEXT_METRICS = ("wer", "per", "bleu", "chrf", "rouge")
"""The names `config.text_metrics` takes; "rouge" gives the four `ROUGE_TYPES`."""
