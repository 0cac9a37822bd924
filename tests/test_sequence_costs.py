"""Sentence costs on token ids (edit rate, 1 - BLEU, 1 - chrF) against plain-Python
implementations over collections.Counter n-grams, on hand-made pairs and random small-integer
sequences with repeats, EOS, PAD and tokens after EOS (never read)."""

import collections
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax_s2s import sequence_costs

PAD, EOS = 0, 2
A, B, C, D = 3, 4, 5, 6
LENGTH, K = 9, 3


def symbols(row) -> list[int]:
    out = []
    for token in row:
        if token in (EOS, PAD):
            break
        out.append(int(token))
    return out


def ngrams(seq: list[int], n: int) -> collections.Counter:
    return collections.Counter(tuple(seq[i:i + n]) for i in range(len(seq) - n + 1))


def clipped(c: list[int], r: list[int], n: int) -> int:
    ref = ngrams(r, n)
    return sum(min(count, ref[gram]) for gram, count in ngrams(c, n).items())


def python_bleu(c: list[int], r: list[int]) -> float:
    """Sentence BLEU, 4-grams, add-one smoothing for n > 1 (Lin & Och 2004)."""
    if not c:
        return 1.0 if not r else 0.0
    logs = []
    for n in range(1, 5):
        total = max(len(c) - n + 1, 0)
        p = clipped(c, r, n) / total if n == 1 else (clipped(c, r, n) + 1) / (total + 1)
        if p == 0:
            return 0.0
        logs.append(math.log(p))
    brevity = 1.0 if len(c) >= len(r) else math.exp(1 - len(r) / len(c))
    return brevity * math.exp(sum(logs) / 4)


def python_chrf(c: list[int], r: list[int], beta: float = 2.0) -> float:
    """chrF over tokens, 6-grams; P and R averaged over the orders both sides have."""
    if not c and not r:
        return 1.0
    precisions, recalls = [], []
    for n in range(1, 7):
        if len(c) < n or len(r) < n:
            continue
        precisions.append(clipped(c, r, n) / (len(c) - n + 1))
        recalls.append(clipped(c, r, n) / (len(r) - n + 1))
    if not precisions:
        return 0.0
    p, rec = np.mean(precisions), np.mean(recalls)
    return 0.0 if p + rec == 0 else (1 + beta ** 2) * p * rec / (beta ** 2 * p + rec)


def python_edit(a: list[int], b: list[int]) -> int:
    table = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i, j in itertools.product(range(1, len(a) + 1), range(1, len(b) + 1)):
        table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1,
                          table[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return table[len(a)][len(b)]


EXPECTED = {
    "bleu": lambda c, r: 1 - python_bleu(c, r),
    "chrf": lambda c, r: 1 - python_chrf(c, r),
    "edit": lambda c, r: python_edit(c, r) / max(len(r), 1),
}
# (candidate, reference) symbol lists: identical, no overlap, empty candidate, both empty,
# shorter than every order above 1, repeats that clipping must cap, a permutation.
HAND = [
    ([A, B, A, C], [A, B, A, C]), ([A, B], [C, D, C]), ([], [A, B]), ([], []), ([A], [A, B, A]),
    ([A, A, A, A], [A, B]), ([A, B, A], [A, B]), ([B, A, C, A, B, D], [A, B, C, A, B, A, D]),
    ([A, B, C, D, A, B, C, D], [D, C, B, A]), ([C], []),
]


def pad_row(seq: list[int], rng: np.random.Generator) -> np.ndarray:
    """seq, EOS, then (when there is room) either PAD or random tokens that must not be read."""
    row = np.full(LENGTH, PAD, np.int64)
    row[:len(seq)] = seq
    if len(seq) < LENGTH:
        row[len(seq)] = EOS
        if rng.random() < 0.5:
            row[len(seq) + 1:] = rng.integers(A, D + 1, LENGTH - len(seq) - 1)
    return row


@pytest.fixture(scope="module")
def cases():
    """(candidates [rows, K, LENGTH], references [rows, LENGTH], the costs by name [rows, K]):
    row i < len(HAND) holds hand pair i in every slot; the rest are random, from a 3-symbol
    alphabet (many repeats), a slot sometimes a copy of the reference."""
    rng = np.random.default_rng(0)
    pairs = [[pair] * K for pair in HAND]
    for _ in range(40):
        ref = list(rng.integers(A, C + 1, rng.integers(0, LENGTH)))
        pairs.append([(ref, ref) if rng.random() < 0.15 else
                      (list(rng.integers(A, C + 1, rng.integers(0, LENGTH + 1))), ref)
                      for _ in range(K)])
    candidates = np.array([[pad_row(c, rng) for c, _ in row] for row in pairs])
    references = np.array([pad_row(row[0][1], rng) for row in pairs])
    compute = jax.jit(lambda c, r: {name: cost(c, r, EOS, PAD)
                                    for name, cost in sequence_costs.COSTS.items()})
    got = compute(jnp.asarray(candidates, jnp.int32), jnp.asarray(references, jnp.int32))
    return candidates, references, {name: np.asarray(v) for name, v in got.items()}


@pytest.mark.parametrize("name", ["bleu", "chrf", "edit"])
def test_costs_equal_plain_python_on_hand_made_and_random_pairs(cases, name):
    candidates, references, got = cases
    assert got[name].shape == candidates.shape[:2] and got[name].dtype == np.float32
    for row, c in itertools.product(range(len(references)), range(K)):
        cand, ref = symbols(candidates[row, c]), symbols(references[row])
        assert got[name][row, c] == pytest.approx(EXPECTED[name](cand, ref), abs=1e-5), (
            name, cand, ref)


def test_edge_cases_of_bleu_and_chrf(cases):
    _, _, got = cases
    for name in ("bleu", "chrf"):
        by_pair = {i: float(got[name][i, 0]) for i in range(len(HAND))}
        assert by_pair[0] == 0.0 and by_pair[3] == 0.0  # identical; both empty: exactly 0
        assert by_pair[1] == 1.0 and by_pair[2] == 1.0 and by_pair[9] == 1.0  # no overlap; empty
        assert 0 < by_pair[4] < 1 and 0 < by_pair[6] < 1
    # a b a against a b, by hand: p = 2/3, (1+1)/(2+1), (0+1)/(1+1), 1/1; no brevity penalty.
    bleu = (2 / 3 * 2 / 3 * 1 / 2) ** 0.25
    assert float(got["bleu"][6, 0]) == pytest.approx(1 - bleu, abs=1e-6)
    # chrF: order 1 P 2/3 R 1, order 2 P 1/2 R 1 (order 3: the reference has none).
    p, r = (2 / 3 + 1 / 2) / 2, 1.0
    assert float(got["chrf"][6, 0]) == pytest.approx(1 - 5 * p * r / (4 * p + r), abs=1e-6)
    # Every random copy of the reference costs exactly 0.
    candidates, references, _ = cases
    copies = np.array([[symbols(c) == symbols(ref) for c in row]
                       for row, ref in zip(candidates, references, strict=True)])
    assert copies[len(HAND):].sum() >= 5
    for name in ("bleu", "chrf", "edit"):
        assert not got[name][copies].any()


def test_bleu_and_chrf_equal_sacrebleus_sentence_scores(cases):
    """The same scores as sacrebleu (the corpus metrics' library): tokens as words for BLEU
    (add-one smoothing above unigrams, effective order), as characters for chrF (orders 1-6,
    beta 2, no word n-grams); every pair with two non-empty sides."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu = BLEU(smooth_method="add-k", smooth_value=1, tokenize="none", effective_order=True)
    chrf = CHRF(char_order=6, word_order=0, beta=2)
    candidates, references, got = cases
    compared = 0
    for row, c in itertools.product(range(len(references)), range(K)):
        cand, ref = symbols(candidates[row, c]), symbols(references[row])
        if not cand or not ref:
            continue
        chars = ["".join(chr(ord("a") + t) for t in s) for s in (cand, ref)]
        words = [" ".join(f"w{t}" for t in s) for s in (cand, ref)]
        expected_bleu = 1 - bleu.sentence_score(words[0], [words[1]]).score / 100
        expected_chrf = 1 - chrf.sentence_score(chars[0], [chars[1]]).score / 100
        assert got["bleu"][row, c] == pytest.approx(expected_bleu, abs=1e-5), (cand, ref)
        assert got["chrf"][row, c] == pytest.approx(expected_chrf, abs=1e-5), (cand, ref)
        compared += 1
    assert compared >= 100
