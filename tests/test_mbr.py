import jax
import numpy as np
import pytest
import sacrebleu
from conftest import untrained_symbol_model
from rapidfuzz.distance import Levenshtein

from flax_s2s import decoding, infer, mbr

# Word outputs whose consensus is neither the first candidate nor the most frequent one.
CANDIDATES = ["a cat sat on the mat", "the cat sat on a mat", "the cat sat on the mat",
              "the dog sat on the mat", "the cat lay on the rug", "a cat sat on the mat"]


def _plain_utility(name, hypothesis, reference):
    """Each utility written out again with the libraries' own calls."""
    if name == "chrf":
        return sacrebleu.sentence_chrf(hypothesis, [reference]).score / 100
    if name == "bleu":
        return sacrebleu.sentence_bleu(hypothesis, [reference], use_effective_order=True).score / 100
    if name == "edit":
        h, r = hypothesis.split(" "), reference.split(" ")
        return 1 - Levenshtein.distance(h, r) / max(len(h), len(r))
    return float(hypothesis == reference)


@pytest.mark.parametrize("utility", mbr.UTILITIES)
def test_the_pick_has_the_highest_mean_utility_against_the_others(utility):
    n = len(CANDIDATES)
    means = []
    for i in range(n):
        total = 0.0
        for j in range(n):
            if j != i:
                total += _plain_utility(utility, CANDIDATES[i], CANDIDATES[j])
        means.append(total / (n - 1))
    order, expected = mbr.rank(CANDIDATES, utility, separator=" ")
    np.testing.assert_allclose(expected, means, rtol=1e-9, atol=1e-12)
    best = max(means)
    assert order[0] == means.index(best), "ties go to the earlier candidate"
    assert [means[k] for k in order] == sorted(means, reverse=True)
    if utility != "exact":
        assert order[0] not in (0, 5), "the case should pick a candidate other than the first"


def test_one_candidate_is_the_pick():
    order, expected = mbr.rank(["only one"], "chrf")
    assert order.tolist() == [0] and expected.tolist() == [1.0]
    with pytest.raises(ValueError, match="at least one candidate"):
        mbr.rank([], "chrf")


def test_bad_settings_are_refused_naming_the_parameter():
    for kwargs, name in (({"candidates": 0}, "candidates=0"), ({"utility": "ter"}, "utility="),
                         ({"source": "greedy"}, "source="), ({"top_p": 0.0}, "top_p=0.0"),
                         ({"temperature": 0.0}, "temperature=0.0")):
        with pytest.raises(ValueError, match=name):
            mbr.MBRSettings(**{"candidates": 4, **kwargs})


# --- candidates from a tiny model ---

SRC_LEN, MAX_LEN, BATCH = 4, 4, 4
LINES = ["abc", "d", "eeee", "ab", "edcb", "c"]


@pytest.fixture(scope="module")
def trained():
    return untrained_symbol_model(2, BATCH, SRC_LEN, MAX_LEN)


def _src(trained, lines):
    src = np.zeros((BATCH, SRC_LEN), np.int32)
    for row, line in enumerate(lines):
        src[row, : len(line)] = trained.src_vocab.encode(line, add_eos=False)
    return src


def test_mbr_decoding_picks_among_its_candidates_whatever_the_batch_order(trained):
    settings = mbr.MBRSettings(4, "sample", "edit", temperature=2.0, seed=3)
    decode = lambda sort: infer.decode_hypotheses(  # noqa: E731
        trained, LINES, nbest=4, batch_size=BATCH, sort=sort, mbr_settings=settings)
    by_length, in_order = decode(True), decode(False)
    assert by_length == in_order, "an input's candidates follow its line number alone"
    # Line k's candidates are the draws of decoding.sample with keys fold_in(fold_in(seed, k), j).
    for start in (0, BATCH):
        lines = list(range(start, min(start + BATCH, len(LINES))))
        src = np.repeat(_src(trained, [LINES[k] for k in lines]), 4, axis=0)
        keys = mbr.candidate_keys(3, lines + [0] * (BATCH - len(lines)), 4)
        tokens, _, _ = jax.device_get(decoding.sample(trained.model, trained.variables, src,
                                                      MAX_LEN, keys, 2.0))
        for row, k in enumerate(lines):
            texts = [trained.tgt_vocab.decode(t) for t in tokens[row * 4 : row * 4 + 4]]
            order, expected = mbr.rank(texts, "edit")
            distinct = [i for n, i in enumerate(order) if texts[i] not in [texts[j] for j in order[:n]]]
            assert [h.text for h in by_length[k]] == [texts[i] for i in distinct]
            np.testing.assert_allclose([h.score for h in by_length[k]], expected[distinct])
    assert len({h.text for hypotheses in by_length for h in hypotheses}) > 1


def test_mbr_over_one_beam_candidate_is_the_beam_search_output(trained):
    src = _src(trained, LINES[:BATCH])
    settings = mbr.MBRSettings(1, "beam", "chrf")
    picked = mbr.mbr_decode(trained.model, trained.variables, src, trained.tgt_vocab, MAX_LEN,
                            settings, BATCH)
    tokens, _, _ = decoding.beam_search(trained.model, trained.variables, src, 1, MAX_LEN, 0.6)
    np.testing.assert_array_equal(picked, np.asarray(tokens)[:, 0])
