"""Text metrics against hand-computed values and pure-Python references."""

import math
import random
from collections import Counter

import pytest

from flax_s2s import metrics, reference_eval


def _tokens(texts):
    return [t.split() for t in texts]


# A small G2P case; words 2 and 3 have two references each.
HYPOTHESES = ["K AE T", "T AH M EY T OW", "T AH M AA T OW", "D AO G", "AH B"]
REFERENCES = [
    ["K AE T"],
    ["T AH M EY T OW", "T AH M AA T OW"],
    ["T AH M EY T OW", "T AH M AA T OW"],
    ["D AA G"],
    ["AH B K D", "AH B K"],
]


def test_multi_reference_word_error_rate_hand_computed():
    # Right: 1 (the only reference), 2 (the first), 3 (the second). Wrong: 4, 5. -> 2/5 words.
    hyps, refs = _tokens(HYPOTHESES), [_tokens(r) for r in REFERENCES]
    assert metrics.word_error_rate(hyps, refs) == pytest.approx(40.0)
    assert metrics.exact_match(hyps, refs) == pytest.approx(0.6)
    # Scored against only the first reference, word 3 would be wrong too.
    assert metrics.word_error_rate(hyps, [r[:1] for r in refs]) == pytest.approx(60.0)


def test_multi_reference_phone_error_rate_hand_computed():
    # Edits to the closest reference: 0, 0, 0, 1 (AO->AA), 1 (the second: insert K);
    # those references' lengths: 3 + 6 + 6 + 3 + 3 = 21.
    hyps, refs = _tokens(HYPOTHESES), [_tokens(r) for r in REFERENCES]
    assert metrics.phone_error_rate(hyps, refs) == pytest.approx(100 * 2 / 21)


def _levenshtein(a, b):
    """Textbook dynamic programme: an independent reference for the library's distance."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def test_phone_error_rate_equals_a_pure_python_edit_distance():
    rng = random.Random(0)
    phones = ["AA", "AE", "B", "K", "T", "S"]
    hyps = [[rng.choice(phones) for _ in range(rng.randint(0, 6))] for _ in range(50)]
    refs = [[[rng.choice(phones) for _ in range(rng.randint(1, 6))] for _ in range(rng.randint(1, 3))]
            for _ in range(50)]
    errors = length = 0
    for h, rs in zip(hyps, refs, strict=True):
        distances = [_levenshtein(h, r) for r in rs]
        best = distances.index(min(distances))
        errors, length = errors + distances[best], length + len(rs[best])
    assert metrics.phone_error_rate(hyps, refs) == pytest.approx(100 * errors / length)


def test_bleu_hand_computed():
    # hyp vs ref n-gram matches: 1-grams 5/6 ("the" clipped to 1), 2-grams 3/5, 3-grams 2/4,
    # 4-grams 1/3; equal lengths, so no brevity penalty.
    score = metrics.bleu(["the cat sat on the mat"], [["the cat sat on a mat"]])
    assert score == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-6)


def test_bleu_clips_against_the_best_of_several_references_of_varying_number():
    # With both references: 1-grams 5/6 ("the" is at most once in either), 2-, 3-, 4-grams all
    # found in one reference or the other: 5/5, 4/4, 3/3; the second item matches fully.
    hyps = ["the cat sat on the mat", "a b c d e"]
    refs = [["the cat sat on a mat", "a cat sat on the mat"], ["a b c d e"]]
    expected = (10 / 11 * 9 / 9 * 7 / 7 * 5 / 5) ** 0.25  # corpus sums over both items
    assert metrics.bleu(hyps, refs) == pytest.approx(100 * expected, abs=1e-6)


def _chrf(hypothesis, reference, order=6, beta=2.0):
    """chrF as sacrebleu 2 defines it: whitespace dropped, precision and recall of character
    n-grams averaged over n = 1..order, then F-beta."""
    hyp, ref = hypothesis.replace(" ", ""), reference.replace(" ", "")
    precisions, recalls = [], []
    for n in range(1, order + 1):
        h = Counter(hyp[i : i + n] for i in range(len(hyp) - n + 1))
        r = Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
        matches = sum((h & r).values())
        precisions.append(matches / sum(h.values()))
        recalls.append(matches / sum(r.values()))
    p, r = sum(precisions) / order, sum(recalls) / order
    return 100 * (1 + beta**2) * p * r / (beta**2 * p + r)


def test_chrf_equals_a_pure_python_reference():
    hypothesis, reference = "the cats sat down", "the cat sat down here"
    assert metrics.chrf([hypothesis], [[reference]]) == pytest.approx(_chrf(hypothesis, reference), abs=1e-6)
    # Several references: the sentence is scored against the one it matches best.
    assert metrics.chrf([hypothesis], [[reference, hypothesis]]) == pytest.approx(100.0)
    assert not math.isclose(_chrf(hypothesis, reference), 100.0)


def test_score_texts_counts_characters_or_symbols_by_separator():
    refs = [["ab c"]]
    by_symbol = reference_eval.score_texts(["ab d"], refs, ("per",), separator=" ")
    by_char = reference_eval.score_texts(["ab d"], refs, ("per",), separator="")
    assert by_symbol["per"] == pytest.approx(100 * 1 / 2)  # [ab, d] vs [ab, c]
    assert by_char["per"] == pytest.approx(100 * 1 / 4)  # "ab d" vs "ab c"
    with pytest.raises(ValueError, match="nope"):
        reference_eval.score_texts(["a"], refs, ("nope",), separator=" ")


def test_misaligned_or_missing_references_are_errors():
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        metrics.word_error_rate([["A"], ["B"]], [[["A"]]])
    with pytest.raises(ValueError, match="item 0 has no reference"):
        metrics.phone_error_rate([["A"]], [[]])
