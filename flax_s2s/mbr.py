"""Minimum Bayes risk (MBR) decoding: of N candidate outputs, pick the one the others agree with.

```
settings = MBRSettings(candidates=16, source="sample", utility="chrf", top_p=0.9, seed=0)
tokens, lengths, scores = candidates(model, variables, src_tokens, line_indices, max_len, settings)
order, expected = rank(texts_of_one_input, "chrf")      # order[0]: the MBR pick
```
The candidates of an input are N draws of `decoding.sample` (temperature, top-p) or the N best
hypotheses of `decoding.beam_search`. Each candidate is scored against every other with a
utility (chrF, sentence BLEU, edit similarity or exact match), as if the others were references
drawn from the model: the N x N utility matrix is computed once per input (each distinct pair of
texts once), and the pick maximises the mean utility against the other N - 1 candidates (Eikema
and Aziz, 2020). Ties go to the earlier candidate (for beam candidates: the better scored).

Determinism: the sampling keys of input line i are fold_in(fold_in(PRNGKey(seed), i), j) for its
candidate j, so an input's candidates depend on the seed and its line number alone, not on the
batch it was decoded in, nor on how the lines were ordered into batches.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import sacrebleu
from rapidfuzz.distance import Levenshtein

from flax_s2s import decoding
from flax_s2s.data.vocab import Vocab, split_symbols
from flax_s2s.models import Seq2Seq

Array = jax.Array

SOURCES = ("sample", "beam")
UTILITIES = ("chrf", "bleu", "edit", "exact")


@dataclasses.dataclass(frozen=True)
class MBRSettings:
    """How MBR draws its candidates and compares them.

    candidates: N per input (>= 1). source: "sample" (N draws) or "beam" (the N-best of a beam
    of width N). utility: one of UTILITIES. temperature (> 0) and top_p (in (0, 1]): sampling's.
    seed: the root of the sampling keys.
    """

    candidates: int
    source: str = "sample"
    utility: str = "chrf"
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.candidates < 1:
            raise ValueError(f"mbr candidates={self.candidates}: must be >= 1")
        if self.source not in SOURCES:
            raise ValueError(f"mbr source={self.source!r}: must be one of {SOURCES}")
        if self.utility not in UTILITIES:
            raise ValueError(f"mbr utility={self.utility!r}: must be one of {UTILITIES}")
        if not 0 < self.temperature < math.inf:
            raise ValueError(f"mbr temperature={self.temperature}: must be a finite number > 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"mbr top_p={self.top_p}: must be in (0, 1]")


# --- utilities: u(hypothesis, reference) in [0, 1], higher is better ---


@functools.cache
def _chrf() -> sacrebleu.metrics.CHRF:
    return sacrebleu.metrics.CHRF()


@functools.cache
def _bleu() -> sacrebleu.metrics.BLEU:
    # Effective order: a short sentence without 4-gram matches does not score 0 outright.
    return sacrebleu.metrics.BLEU(effective_order=True)


def utility_fn(utility: str, separator: str = "") -> Callable[[str, str], float]:
    """u(hypothesis, reference) for a name of UTILITIES:
    - chrf: sentence chrF (sacrebleu defaults) / 100;
    - bleu: sentence BLEU (sacrebleu, effective order) / 100; over words, so for outputs whose
      symbols are separated by spaces;
    - edit: 1 - Levenshtein distance / the longer length, over the vocabulary's symbols
      (`split_symbols` with `separator`: characters, or phones / words), as WER and PER count;
    - exact: 1 if the texts are equal, else 0 (MBR is then a majority vote).
    """
    if utility == "chrf":
        return lambda h, r: _chrf().sentence_score(h, [r]).score / 100.0
    if utility == "bleu":
        return lambda h, r: _bleu().sentence_score(h, [r]).score / 100.0
    if utility == "edit":
        return lambda h, r: Levenshtein.normalized_similarity(split_symbols(h, separator),
                                                             split_symbols(r, separator))
    if utility == "exact":
        return lambda h, r: float(h == r)
    raise ValueError(f"mbr utility={utility!r}: must be one of {UTILITIES}")


def utility_matrix(texts: Sequence[str], utility: str, separator: str = "") -> np.ndarray:
    """U [n, n] with U[i, j] = u(texts[i] as hypothesis, texts[j] as reference); each distinct
    pair of texts is scored once, however often the texts repeat."""
    score = utility_fn(utility, separator)
    distinct = list(dict.fromkeys(texts))
    index = np.array([distinct.index(t) for t in texts])
    table = np.array([[score(h, r) for r in distinct] for h in distinct], np.float64)
    return table[index[:, None], index[None, :]]


def expected_utilities(matrix: np.ndarray) -> np.ndarray:
    """The mean utility of each candidate against the others: U [n, n] -> [n] (its own
    diagonal entry left out; n = 1: [1.0], the lone candidate)."""
    n = matrix.shape[0]
    if n == 1:
        return np.ones(1)
    return (matrix.sum(1) - np.diag(matrix)) / (n - 1)


def rank(texts: Sequence[str], utility: str, separator: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(order [n], expected utilities [n]): candidate indices by mean utility against the others,
    best first (order[0] is the MBR pick; ties keep the earlier candidate)."""
    if not texts:
        raise ValueError("MBR needs at least one candidate")
    expected = expected_utilities(utility_matrix(texts, utility, separator))
    return np.argsort(-expected, kind="stable"), expected


# --- candidates ---


def candidate_keys(seed: int, line_indices: Array | Sequence[int], n: int) -> Array:
    """Sampling keys [len(line_indices) * n]: fold_in(fold_in(PRNGKey(seed), line), j) for the
    j-th candidate of each line, row line_k * n + j as `candidates` tiles the sources."""
    root = jax.random.PRNGKey(seed)
    lines = jnp.asarray(np.asarray(line_indices, np.uint32))
    per_line = jax.vmap(lambda i: jax.random.fold_in(root, i))(lines)
    return jax.vmap(lambda key: jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(n)))(
        per_line
    ).reshape(-1, *root.shape)


def candidates(
    model: Seq2Seq,
    variables: Any,
    src_tokens: np.ndarray,
    line_indices: Sequence[int],
    max_len: int,
    settings: MBRSettings,
    alpha: float = 0.6,
    min_len: int = 0,
    controls: decoding.GenerationControls | None = None,
    prefix: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The N candidates of each source: tokens [batch, N, max_len], lengths [batch, N] and
    scores [batch, N] (the model's log p; for beam candidates over the length penalty, -inf for
    an empty beam slot). src_tokens [batch, src_len]; line_indices [batch] seed each row's draws.
    `controls` and a forced `prefix` [batch, prefix_len] apply to every candidate.
    """
    n = settings.candidates
    arguments = controls.arguments() if controls is not None else {}
    if settings.source == "beam":
        outputs = decoding.beam_search(model, variables, src_tokens, n, max_len, alpha, min_len,
                                       prefix=prefix, **arguments)
        return tuple(np.asarray(x) for x in jax.device_get(outputs))
    batch = src_tokens.shape[0]
    tiled = np.repeat(np.asarray(src_tokens), n, axis=0)  # row b * n + j: candidate j of b
    keys = candidate_keys(settings.seed, line_indices, n)
    outputs = decoding.sample(model, variables, tiled, max_len, keys, settings.temperature, 0,
                              settings.top_p, min_len,
                              prefix=None if prefix is None else np.repeat(prefix, n, axis=0),
                              **arguments)
    return tuple(np.asarray(x).reshape(batch, n, *x.shape[1:]) for x in jax.device_get(outputs))


def pick(tokens: np.ndarray, scores: np.ndarray, tgt_vocab: Vocab,
         utility: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per source, (order, expected utilities) over its found candidates (finite score), from
    `candidates`' outputs; order indexes the candidate axis, best first, one candidate per
    distinct text (repeated draws share their mean utility)."""
    ranked = []
    for row_tokens, row_scores in zip(tokens, scores, strict=True):
        found = np.flatnonzero(np.isfinite(row_scores))
        texts = [tgt_vocab.decode(row_tokens[k]) for k in found]
        order, expected = rank(texts, utility, tgt_vocab.separator)
        seen: set[str] = set()
        first = [i for i in order if not (texts[i] in seen or seen.add(texts[i]))]
        ranked.append((found[first], expected[first]))
    return ranked


def mbr_decode(
    model: Seq2Seq,
    variables: Any,
    src: np.ndarray,
    tgt_vocab: Vocab,
    max_len: int,
    settings: MBRSettings,
    batch_size: int,
    alpha: float = 0.6,
    controls: decoding.GenerationControls | None = None,
) -> np.ndarray:
    """The MBR pick of every source [n, src_len] -> tokens [n, max_len], in batches of one
    static shape (the last filled with copies of its last source); source k is line k.
    `controls`: the generation controls of every candidate."""
    picked = []
    for start in range(0, len(src), batch_size):
        batch = src[start : start + batch_size]
        rows = len(batch)
        batch = np.pad(batch, ((0, batch_size - rows), (0, 0)), mode="edge")
        lines = np.arange(start, start + batch_size)
        tokens, _, scores = candidates(model, variables, batch, lines, max_len, settings, alpha,
                                       controls=controls)
        for b, (order, _) in enumerate(pick(tokens[:rows], scores[:rows], tgt_vocab,
                                            settings.utility)):
            picked.append(tokens[b, order[0]])
    return np.stack(picked)
