"""NumPy references for the generation controls: Hugging Face's NoRepeatNGramLogitsProcessor and
RepetitionPenaltyLogitsProcessor transcribed, and one step of a search under the controls as
docs/decoding.md states them."""

from __future__ import annotations

import numpy as np

from flax_s2s.data.vocab import BOS, EOS, PAD


def hf_repetition_penalty(scores, input_ids, penalty):
    """Hugging Face's RepetitionPenaltyLogitsProcessor on one row: scores [vocab], input_ids the
    decoder's input so far (its start token included)."""
    scores = np.array(scores, np.float64)
    ids = np.asarray(input_ids)
    score = scores[ids]
    scores[ids] = np.where(score < 0, score * penalty, score / penalty)
    return scores


def hf_banned_tokens(input_ids, n):
    """Hugging Face's NoRepeatNGramLogitsProcessor (_calc_banned_ngram_tokens) on one row."""
    cur_len = len(input_ids)
    if cur_len + 1 < n:
        return []
    generated = {}
    for ngram in zip(*[input_ids[i:] for i in range(n)], strict=False):
        generated.setdefault(tuple(ngram[:-1]), []).append(ngram[-1])
    return generated.get(tuple(input_ids[cur_len + 1 - n : cur_len]), [])


def _log_softmax(logits):
    logits = np.array(logits, np.float64)
    logits[[PAD, BOS]] = -np.inf
    top = logits.max()
    return logits - top - np.log(np.exp(logits - top).sum())


def reference_step(logits, prefix, position, settings, forced):
    """(the model's log-probs, those the search chooses by) [vocab] after `prefix` (a tuple of
    output tokens), with the controls as docs/decoding.md states them; `forced`: the row's
    prefix tokens."""
    model = _log_softmax(logits)
    input_ids = [BOS, *prefix]
    penalty, n = settings.get("repetition_penalty", 1.0), settings.get("no_repeat_ngram_size", 0)
    search = _log_softmax(hf_repetition_penalty(logits, input_ids, penalty) if penalty != 1
                          else logits)
    if position < settings.get("min_len", 0):
        search[EOS] = -np.inf
    if n:
        search[hf_banned_tokens(input_ids, n)] = -np.inf
    if position < len(forced):
        search = np.full(len(model), -np.inf)
        search[forced[position]] = model[forced[position]]
    return model, search
