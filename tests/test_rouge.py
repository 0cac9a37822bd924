"""ROUGE: equal to Google's rouge-score package on stored cases, and to a tiny independent
reference (n-gram counts, an LCS table) for the aggregation and the several-references rule."""

from __future__ import annotations

import json
import pathlib
import random
from collections import Counter

import pytest

from configs import default
from flax_s2s import metrics, reference_eval
from flax_s2s.training.config import validate_config

CASES = json.loads((pathlib.Path(__file__).parent / "fixtures" / "rouge_cases.json").read_text())
TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def test_rouge_equals_the_rouge_score_package_on_stored_cases():
    cases = CASES["cases"]
    for case in cases:
        got = metrics.rouge([case["hypothesis"]], [case["references"]])
        assert got == pytest.approx({k: 100 * v for k, v in case["expected"].items()}, abs=1e-9), case
    # Over all cases at once: the mean of the per-example scores.
    got = metrics.rouge([c["hypothesis"] for c in cases], [c["references"] for c in cases])
    expected = {k: 100 * sum(c["expected"][k] for c in cases) / len(cases) for k in TYPES}
    assert got == pytest.approx(expected, abs=1e-9)
    # The stored cases include one where different references win different types.
    assert any(len(c["references"]) > 1 and c["expected"]["rouge1"] == 1.0
               and c["expected"]["rouge2"] < 1.0 for c in cases)


def _f1(overlap: int, hypothesis_count: int, reference_count: int) -> float:
    precision = overlap / hypothesis_count if hypothesis_count else 0.0
    recall = overlap / reference_count if reference_count else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def _reference_rouge(hypotheses, references) -> dict[str, float]:
    """ROUGE-1/2/L F1 of words that stemming leaves alone: per type, the best reference, then
    the mean over hypotheses, in percent."""
    totals = Counter()
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        h = hypothesis.split()
        best = Counter()
        for reference in refs:
            r = reference.split()
            scores = {f"rouge{n}": _f1(sum((_ngrams(h, n) & _ngrams(r, n)).values()),
                                       max(len(h) - n + 1, 0), max(len(r) - n + 1, 0))
                      for n in (1, 2)}
            scores["rougeL"] = _f1(_lcs(h, r), len(h), len(r))
            for name, value in scores.items():
                best[name] = max(best[name], value)
        totals.update(best)
    return {name: 100 * totals[name] / len(hypotheses) for name in ("rouge1", "rouge2", "rougeL")}


def test_rouge_1_2_l_equal_an_independent_reference_with_several_references():
    rng = random.Random(0)
    words = "the a cat dog sat ran on mat rug big red".split()  # too short to be stemmed

    def text():
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 10)))

    hypotheses = [text() for _ in range(40)]
    references = [[text() or "a" for _ in range(rng.randint(1, 3))] for _ in hypotheses]
    got = metrics.rouge(hypotheses, references)
    expected = _reference_rouge(hypotheses, references)
    assert {k: got[k] for k in expected} == pytest.approx(expected, abs=1e-9)
    assert got["rougeLsum"] == pytest.approx(got["rougeL"], abs=1e-9)  # one sentence each
    # The best reference per type beats scoring against the first reference alone.
    first_only = _reference_rouge(hypotheses, [refs[:1] for refs in references])
    assert all(expected[k] > first_only[k] for k in expected)


def test_rouge_lsum_compares_sentences_split_without_a_download():
    assert metrics.sentences('It rained. Roads flooded!\nWhy? "Nobody knows." (Fine.) e.g. 3.5 ') == [
        "It rained.", "Roads flooded!", "Why?", '"Nobody knows."', "(Fine.)", "e.g.", "3.5"]
    # Hand-computed: the whole texts share an LCS of 3 of their 6 words (F1 0.5); sentence by
    # sentence, each reference sentence is found whole in the hypothesis (F1 1).
    got = metrics.rouge(["The cat sat. The dog ran."], [["The dog ran. The cat sat."]])
    assert got["rougeL"] == pytest.approx(50.0) and got["rougeLsum"] == pytest.approx(100.0)
    assert got["rouge1"] == pytest.approx(100.0) and got["rouge2"] == pytest.approx(80.0)


def test_rouge_is_a_text_metric_giving_four_keys():
    scores = reference_eval.score_texts(["the cat sat", "dogs run"], [["the cat sat"], ["a dog ran"]],
                                        ["rouge", "bleu"], " ")
    assert list(scores) == [*TYPES, "bleu"]
    assert scores["rouge1"] == pytest.approx(100 * (1 + _f1(1, 2, 3)) / 2)  # "dogs"/"dog" stem alike
    config = default.get_config()
    config.text_metrics = ("rouge",)
    validate_config(config)
