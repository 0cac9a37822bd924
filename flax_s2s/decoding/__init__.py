"""Jit-compiled decoding over the decoder step-function seam (see `flax_s2s.models`).

Three searches share one set of conventions, so their outputs compare directly:
- `greedy` and `sample` return `(tokens [batch, max_len], lengths [batch], scores [batch])`;
  `beam_search` returns the same with a beam axis after batch, hypotheses best first.
- Special tokens are the model's (`model.special_tokens`): decoding starts from its BOS, stops a
  row at its EOS and fills the rest with its PAD.
- Tokens after EOS are PAD; a length counts the tokens up to and including EOS. A sequence that
  reaches `max_len` (or its row's max_len_a/b limit) without EOS ends there (truncated) and its
  length is that limit.
- `min_len` (default 0) forbids EOS at positions before it: every output has at least `min_len`
  tokens before its EOS (fairseq's convention), so its length is at least min_len + 1, or
  its limit when it is truncated. EOS is masked after the softmax, not before: scores stay the
  model's own log-probabilities, and a hypothesis scores the same with or without the constraint.
- PAD and BOS are never emitted: their logits are masked before the softmax, so probabilities are
  renormalised over the tokens a decoder may produce (`output_log_probs`).
- A greedy or sampled score is the sum of the emitted tokens' log-probabilities under the model
  (before any control, temperature or truncation); a beam-search score is that sum divided by
  the GNMT length penalty ((5 + length) / 6) ** alpha, which is the same number when alpha = 0.
- The generation controls (`no_repeat_ngram_size`, `repetition_penalty`, a forced `prefix`,
  `max_len_a` / `max_len_b`) shape what the searches choose, never the scores
  (`flax_s2s.decoding.controls`; docs/decoding.md gives their exact semantics).

Each search is compiled once per (model, batch, src_len, max_len[, beam_size]) and reused:
temperature, top_k, top_p, alpha, min_len and the controls are traced values (a forced prefix is
padded to max_len), so changing them does not recompile, and neither does passing an argument by
keyword instead of by position (see `_compiled_once`). A NaN, infinite or impossible number is
refused by name before anything runs (`check_arguments`).

Modules: `scores` (log-probabilities, lengths, the length penalty), `compiled` (one compilation
per shape), `arguments` (the checks, `GenerationControls`), `controls` (the controls, traced),
`sampling` (temperature, top-k, top-p), `stepwise` (`greedy`, `sample`), `beam`
(`beam_search`), `best` (`best_sequences`).
"""

from flax_s2s.decoding.arguments import GenerationControls, check_arguments
from flax_s2s.decoding.beam import beam_search
from flax_s2s.decoding.best import best_sequences
from flax_s2s.decoding.compiled import _compiled_once
from flax_s2s.decoding.controls import length_limits, penalise_repeats, repeated_ngram_bans
from flax_s2s.decoding.sampling import sampling_logits
from flax_s2s.decoding.scores import (
    forbid_early_eos,
    length_penalty,
    output_log_probs,
    sequence_lengths,
)
from flax_s2s.decoding.stepwise import Decoded, greedy, sample

__all__ = [
    "Decoded", "GenerationControls", "_compiled_once", "beam_search", "best_sequences",
    "check_arguments", "forbid_early_eos", "greedy", "length_limits", "length_penalty",
    "output_log_probs", "penalise_repeats", "repeated_ngram_bans", "sample", "sampling_logits",
    "sequence_lengths",
]
