"""The generation controls (no_repeat_ngram_size, repetition_penalty, a forced prefix,
max_len_a/b) of greedy, sampling and beam search, against NumPy references: Hugging Face's
NoRepeatNGramLogitsProcessor and RepetitionPenaltyLogitsProcessor transcribed into NumPy, loops
over the model's step, brute-force enumeration of every output of a tiny vocabulary, and a plain
beam search. The searches run unchanged (the real decoding code) over a table-driven seam."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT
from decoding_references import hf_banned_tokens, hf_repetition_penalty, reference_step
from test_decoding import _count_compiles

from configs import default
from flax_s2s import decoding, infer, mbr, reference_eval
from flax_s2s.cli import common
from flax_s2s.data.vocab import BOS, EOS, PAD, SymbolVocab
from flax_s2s.special_tokens import SpecialTokens
from flax_s2s.workdirs import TrainedModel

VOCAB, LEN = 6, 5  # PAD, BOS, EOS and three words; outputs of up to five tokens
WORDS = (3, 4, 5)
# First source token: which table a row reads; lengths 3, 2, 4, 1 for max_len_a/b.
TABLE_SRC = np.array([[3, 4, 5, 0], [4, 6, 0, 0], [5, 5, 5, 5], [6, 0, 0, 0]], np.int32)
PREFIX = np.array([[3, 4], [5, 0], [0, 0], [4, 4]], np.int32)  # PAD: no (more) prefix
SETTINGS = [
    {},
    {"no_repeat_ngram_size": 1},
    {"no_repeat_ngram_size": 2},
    {"no_repeat_ngram_size": 3},
    {"repetition_penalty": 1.8},
    {"repetition_penalty": 0.5},
    {"prefix": PREFIX},
    {"prefix": np.array([[EOS, 0], [4, EOS], [0, 0], [3, 3]], np.int32)},  # EOS ends an output
    {"max_len_a": 1.0, "max_len_b": 0.5},
    {"min_len": 3, "no_repeat_ngram_size": 2, "repetition_penalty": 1.5, "prefix": PREFIX,
     "max_len_a": 0.5, "max_len_b": 2},
]


@dataclasses.dataclass(frozen=True)
class TableDecoder:
    """The seam over a table of logits: next(source's first token, position, previous token)."""

    special_tokens: SpecialTokens = SpecialTokens()

    def encode(self, variables, src_tokens):
        return {"src_tokens": src_tokens}

    def init_cache(self, variables, encoded, max_len):
        return jnp.zeros(encoded["src_tokens"].shape[0])  # nothing to remember

    def step(self, variables, encoded, cache, prev_tokens, position):
        return variables["table"][encoded["src_tokens"][:, 0], position, prev_tokens], cache


@pytest.fixture(scope="module")
def table():
    """Logits of both signs (the penalty divides some and multiplies others), EOS unlikely so
    outputs run long enough to repeat themselves."""
    logits = np.random.default_rng(3).normal(0.0, 2.0, (8, LEN, VOCAB, VOCAB))
    logits[..., EOS] -= 1.0
    return logits.astype(np.float32)


# --- the references over the table ---


def row_limit(src_row, settings):
    a, b = settings.get("max_len_a", 0.0), settings.get("max_len_b", 0.0)
    if a == 0 and b == 0:
        return LEN
    return int(min(max(math.floor(a * int((src_row != PAD).sum()) + b), 1), LEN))


def row_forced(settings, row):
    prefix = settings.get("prefix")
    if prefix is None:
        return ()
    tokens = list(prefix[row])
    return tuple(tokens[: tokens.index(PAD)] if PAD in tokens else tokens)


def _table_step(table, row, settings):
    """step(prefix, position) of row `row` of TABLE_SRC under `settings`."""
    forced = row_forced(settings, row)

    def step(prefix, position):
        previous = prefix[-1] if prefix else BOS
        logits = table[TABLE_SRC[row, 0], position, previous]
        return reference_step(logits, prefix, position, settings, forced)

    return step


def reference_greedy(step, limit):
    prefix, score = (), 0.0
    for position in range(limit):
        model, search = step(prefix, position)
        if not np.isfinite(search).any():
            break
        token = int(np.argmax(search))
        prefix, score = prefix + (token,), score + model[token]
        if token == EOS:
            break
    return prefix, score


def _penalty(length, alpha):
    return ((5 + length) / 6) ** alpha


def reference_beam_search(step, beam_size, limit, alpha):
    """Plain beam search run to the limit, ranking by the search's log-probs; -> [(hypothesis,
    rank, model score)], best first."""
    live, finished = [((), 0.0, 0.0)], []
    for position in range(limit):
        candidates = []
        for prefix, rank, score in live:
            model, search = step(prefix, position)
            candidates += [(prefix + (t,), rank + search[t], score + model[t])
                           for t in range(VOCAB) if np.isfinite(search[t])]
        candidates.sort(key=lambda c: -c[1])
        for hypothesis, rank, score in candidates[:beam_size]:
            if hypothesis[-1] == EOS or position + 1 == limit:
                length = _penalty(len(hypothesis), alpha)
                finished.append((hypothesis, rank / length, score / length))
        live = [c for c in candidates if c[0][-1] != EOS][:beam_size]
    return sorted(finished, key=lambda h: -h[1])[:beam_size]


def brute_force(step, limit, alpha):
    """Every output the controls allow (words then EOS, or `limit` words), with (rank, model
    score) over the length penalty."""
    found = {}
    for length in range(1, limit + 1):
        for tokens in itertools.product((*WORDS, EOS), repeat=length):
            if EOS in tokens[:-1] or (length < limit and tokens[-1] != EOS):
                continue
            rank = score = 0.0
            for position, token in enumerate(tokens):
                model, search = step(tokens[:position], position)
                rank, score = rank + search[token], score + model[token]
            if np.isfinite(rank):
                found[tokens] = (rank / _penalty(length, alpha), score / _penalty(length, alpha))
    return found


def _hypothesis(tokens_row, length):
    return tuple(int(t) for t in tokens_row[: int(length)])


def test_the_references_follow_hugging_face_on_hand_written_cases():
    """The transcriptions themselves, against outcomes worked out by hand."""
    ids = [BOS, 3, 4, 3]
    assert hf_banned_tokens(ids, 2) == [4]  # "3 4" occurred: 4 may not follow 3 again
    assert hf_banned_tokens(ids, 3) == []  # "4 3" never went on
    assert sorted(hf_banned_tokens(ids, 1)) == [BOS, 3, 3, 4]
    assert hf_banned_tokens([BOS, 3], 3) == []
    scores = hf_repetition_penalty([1.0, -1.0, 2.0, -2.0, 4.0, 0.5], ids, 2.0)
    np.testing.assert_allclose(scores, [1.0, -2.0, 2.0, -4.0, 2.0, 0.5])


def test_length_limits_are_floor_of_a_times_source_length_plus_b():
    # TABLE_SRC lengths 3, 2, 4, 1
    limits = lambda a, b: np.asarray(decoding.length_limits(TABLE_SRC, LEN, a, b, PAD)).tolist()  # noqa: E731
    assert limits(0.0, 0.0) == [5, 5, 5, 5]
    assert limits(1.0, 0.5) == [3, 2, 4, 1]
    assert limits(1.5, 1.0) == [5, 4, 5, 2]
    assert limits(0.0, 3.0) == [3, 3, 3, 3]
    assert limits(0.5, -3.0) == [1, 1, 1, 1]


# --- greedy ---


def test_greedy_under_each_control_equals_the_numpy_loop(table):
    """Also: none of the values compiles anew after the first call."""
    variables, model = {"table": table}, TableDecoder()
    unconstrained = jax.device_get(decoding.greedy(model, variables, TABLE_SRC, LEN))
    cache_size = decoding.greedy.jitted._cache_size()
    changed = set()
    with _count_compiles() as compiles:
        for settings in SETTINGS:
            tokens, lengths, scores = jax.device_get(
                decoding.greedy(model, variables, TABLE_SRC, LEN, **settings))
            for row in range(len(TABLE_SRC)):
                expected, score = reference_greedy(_table_step(table, row, settings),
                                                   row_limit(TABLE_SRC[row], settings))
                assert _hypothesis(tokens[row], lengths[row]) == expected, (settings, row)
                assert (tokens[row, lengths[row]:] == PAD).all()
                np.testing.assert_allclose(scores[row], score, rtol=1e-5, atol=1e-5)
            if not np.array_equal(tokens, unconstrained[0]):
                changed.add(str(settings))
    assert compiles == [] and decoding.greedy.jitted._cache_size() == cache_size
    assert len(changed) == len(SETTINGS) - 1, "each control should change some output"


# --- beam search ---

EXHAUSTIVE = 400  # more than the 364 outputs of three words and EOS in five tokens


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_exhaustive_beam_under_each_control_finds_exactly_the_brute_force_outputs(table, alpha):
    """A beam wider than the number of outputs returns every output the controls allow, ranked
    as the search ranks them, with the model's scores."""
    variables, model = {"table": table}, TableDecoder()
    for settings in SETTINGS:
        tokens, lengths, scores = jax.device_get(decoding.beam_search(
            model, variables, TABLE_SRC, EXHAUSTIVE, LEN, alpha, **settings))
        for row in range(len(TABLE_SRC)):
            expected = brute_force(_table_step(table, row, settings),
                                   row_limit(TABLE_SRC[row], settings), alpha)
            found = np.flatnonzero(np.isfinite(scores[row]))
            returned = [_hypothesis(tokens[row, k], lengths[row, k]) for k in found]
            assert sorted(returned) == sorted(expected), (settings, row)
            ranks = [expected[h][0] for h in returned]
            np.testing.assert_allclose(ranks, sorted(ranks, reverse=True), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(scores[row, found], [expected[h][1] for h in returned],
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("beam_size", [2, 3])
def test_beam_under_each_control_equals_a_plain_beam_search(table, beam_size):
    variables, model = {"table": table}, TableDecoder()
    for settings in SETTINGS:
        tokens, lengths, scores = jax.device_get(decoding.beam_search(
            model, variables, TABLE_SRC, beam_size, LEN, 0.6, **settings))
        for row in range(len(TABLE_SRC)):
            expected = reference_beam_search(_table_step(table, row, settings), beam_size,
                                             row_limit(TABLE_SRC[row], settings), 0.6)
            found = np.isfinite(scores[row])
            assert [_hypothesis(tokens[row, k], lengths[row, k])
                    for k in np.flatnonzero(found)] == [h for h, _, _ in expected], settings
            np.testing.assert_allclose(scores[row, found], [s for _, _, s in expected],
                                       rtol=1e-5, atol=1e-5)


def test_a_beam_of_one_with_alpha_0_is_greedy_under_the_controls(table):
    variables, model = {"table": table}, TableDecoder()
    settings = SETTINGS[-1]
    greedy = decoding.greedy(model, variables, TABLE_SRC, LEN, **settings)
    beam = decoding.beam_search(model, variables, TABLE_SRC, 1, LEN, 0.0, **settings)
    np.testing.assert_array_equal(beam[0][:, 0], greedy[0])
    np.testing.assert_allclose(beam[2][:, 0], greedy[2], rtol=1e-6)


# --- sampling ---


def test_sampling_at_temperature_0_or_top_k_1_is_greedy_under_the_controls(table):
    variables, model = {"table": table}, TableDecoder()
    key = jax.random.PRNGKey(0)
    for settings in SETTINGS[1:]:
        expected = jax.device_get(decoding.greedy(model, variables, TABLE_SRC, LEN, **settings))
        for sampling in ({"temperature": 0.0}, {"top_k": 1, "temperature": 3.0}):
            got = jax.device_get(decoding.sample(model, variables, TABLE_SRC, LEN, key,
                                                 **sampling, **settings))
            np.testing.assert_array_equal(got[0], expected[0], err_msg=str(settings))
            np.testing.assert_allclose(got[2], expected[2], rtol=1e-6)


def _hf_sampling_distribution(logits, input_ids, penalty, n, temperature, top_p):
    """Hugging Face's sampling: processors (penalty, n-gram ban) on the logits, then the
    temperature and top-p warpers, then softmax."""
    scores = hf_repetition_penalty(logits, input_ids, penalty)
    scores[[PAD, BOS]] = -np.inf
    scores[hf_banned_tokens(input_ids, n)] = -np.inf
    scores = scores / temperature
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    keep = np.cumsum(probs[order]) - probs[order] < top_p
    kept = np.zeros_like(probs)
    kept[order[keep]] = probs[order[keep]]
    return kept / kept.sum()


def test_sampled_token_after_a_forced_prefix_follows_hugging_face_processors(table):
    """Position 3 after the forced prefix "5 4 5": its frequencies over 4000 draws against the
    distribution Hugging Face's processors and warpers give."""
    variables, model = {"table": table}, TableDecoder()
    draws, forced = 4000, (5, 4, 5)
    src = np.repeat(TABLE_SRC[1:2], draws, axis=0)
    prefix = np.repeat(np.array([forced], np.int32), draws, axis=0)
    settings = {"repetition_penalty": 1.6, "no_repeat_ngram_size": 2}
    tokens, _, _ = jax.device_get(decoding.sample(
        model, variables, src, LEN, jax.random.PRNGKey(7), 0.8, 0, 0.85, prefix=prefix,
        **settings))
    assert (tokens[:, :3] == forced).all()
    logits = table[TABLE_SRC[1, 0], 3, forced[-1]]
    expected = _hf_sampling_distribution(logits, [BOS, *forced], 1.6, 2, 0.8, 0.85)
    # 4 would repeat "5 4"; 5, seen, is penalised but kept; 3 falls out of the nucleus.
    assert expected[4] == 0 and expected[5] > 0 and expected[3] == 0 and expected[EOS] > 0
    counts = np.bincount(tokens[:, 3], minlength=VOCAB) / draws
    standard_error = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(counts - expected) <= 4 * standard_error + 1e-9), (counts, expected)


# --- compilation and checks ---


def test_changing_any_control_does_not_recompile(table):
    variables, model = {"table": table}, TableDecoder()
    key = jax.random.PRNGKey(1)
    searches = {
        "greedy": lambda **kw: decoding.greedy(model, variables, TABLE_SRC, LEN, **kw),
        "sample": lambda **kw: decoding.sample(model, variables, TABLE_SRC, LEN, key, **kw),
        "beam_search": lambda **kw: decoding.beam_search(model, variables, TABLE_SRC, 2, LEN,
                                                         **kw),
    }
    changes = [{"no_repeat_ngram_size": 2}, {"repetition_penalty": 1.2},
               {"repetition_penalty": 2}, {"prefix": PREFIX}, {"prefix": PREFIX[:, :1]},
               {"prefix": np.asarray(PREFIX, np.int64)}, {"max_len_a": 1.5},
               {"max_len_b": 3}, {"max_len_a": 0.5, "max_len_b": 2.5}, {"min_len": 2}]
    for name, search in searches.items():
        jax.block_until_ready(search())
        jitted = getattr(decoding, name).jitted
        cache_size = jitted._cache_size()
        with _count_compiles() as compiles:
            for change in changes:
                jax.block_until_ready(search(**change))
        assert compiles == [] and jitted._cache_size() == cache_size, name


@pytest.mark.parametrize("search, arguments, message", [
    ("beam_search", {"alpha": float("nan")}, "alpha=nan: must be a finite number"),
    ("beam_search", {"alpha": np.float32("inf")}, "alpha=inf: must be a finite number"),
    ("greedy", {"repetition_penalty": float("nan")}, "repetition_penalty=nan: must be a finite"),
    ("greedy", {"repetition_penalty": 0.0}, "repetition_penalty=0.0: must be a finite number > 0"),
    ("greedy", {"no_repeat_ngram_size": -1}, "no_repeat_ngram_size=-1: must be an integer >= 0"),
    ("greedy", {"max_len_a": float("inf")}, "max_len_a=inf: must be a finite number"),
    ("beam_search", {"max_len_b": float("-inf")}, "max_len_b=-inf: must be a finite number"),
    ("sample", {"temperature": float("nan")}, "temperature=nan: must be a finite number >= 0"),
    ("sample", {"top_p": float("nan")}, r"top_p=nan: must be a number in \(0, 1\]"),
    ("sample", {"top_p": 0.0}, r"top_p=0.0: must be a number in \(0, 1\]"),
])
def test_a_nan_or_impossible_value_is_refused_by_name(search, arguments, message):
    variables, model = {"table": np.zeros((8, LEN, VOCAB, VOCAB), np.float32)}, TableDecoder()
    positional = {"greedy": (LEN,), "sample": (LEN, jax.random.PRNGKey(0)),
                  "beam_search": (2, LEN)}[search]
    with pytest.raises(ValueError, match=f"^{message}"):
        getattr(decoding, search)(model, variables, TABLE_SRC, *positional, **arguments)
    name, value = next(iter(arguments.items()))
    if name in decoding.GenerationControls.__dataclass_fields__:
        with pytest.raises(ValueError, match=f"^{message}"):
            decoding.GenerationControls(**{name: value})


def test_the_decode_command_refuses_alpha_nan_naming_it(tmp_path):
    """It used to print empty outputs and exit 0."""
    (tmp_path / "input.txt").write_text("abc\n")
    result = subprocess.run(
        [sys.executable, "-m", "flax_s2s.cli.decode", f"--workdir={tmp_path}", "--beam=2",
         "--alpha=nan", f"--input={tmp_path / 'input.txt'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == "error: --alpha=nan: must be a finite number"
    with pytest.raises(ValueError, match=r"^--repetition_penalty=inf: must be a finite number"):
        common.generation_controls(dataclasses.make_dataclass("Flags", [
            ("no_repeat_ngram_size", int, 0), ("repetition_penalty", float, math.inf),
            ("max_len_a", float, 0.0), ("max_len_b", float, 0.0)])())


# --- the decode command's library and the evaluation ---


def _table_trained(table):
    config = default.get_config()
    config.max_src_len, config.max_tgt_len = TABLE_SRC.shape[1], LEN
    # Source symbols a-d are ids 4-7 (the specials and <unk> first), each a table of its own;
    # target symbols x, y are ids 4, 5.
    return TrainedModel(config, TableDecoder(), {"table": table}, SymbolVocab(list("abcd")),
                        SymbolVocab(["x", "y"], separator=" "), step=0, averaged_steps=(0,))


def test_decode_hypotheses_start_with_their_prefix_and_follow_the_controls(table):
    """Each line as the library decodes it alone: its prefix forced, under the controls."""
    trained = _table_trained(table)
    not_utf8 = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    lines, prefixes = ["ab", "c", "dd", "a", "bcd"], ["x y", "", "y z", "x x x x x", not_utf8]
    controls = decoding.GenerationControls(no_repeat_ngram_size=2, repetition_penalty=1.4,
                                           max_len_a=1.0, max_len_b=2.0)
    messages = []
    hypotheses = infer.decode_hypotheses(trained, lines, 2, 2, batch_size=4, warn=messages.append,
                                         controls=controls, prefixes=prefixes)
    assert hypotheses[3] == [] and hypotheses[4] == []
    assert messages == [
        "line 3: 1 prefix symbol(s) outside the target vocabulary read as <unk>",
        "line 4: a prefix of 5 symbols leaves no room below the model's max_tgt_len=5; "
        "printing an empty line",
        "line 5: prefix not valid UTF-8 (byte 0xff at offset 0); printing an empty line",
    ]
    for index in range(3):
        src = np.zeros((4, TABLE_SRC.shape[1]), np.int32)
        ids = trained.src_vocab.encode(lines[index], add_eos=False)
        src[0, : len(ids)] = ids
        forced = trained.tgt_vocab.encode(prefixes[index], add_eos=False) if prefixes[index] else []
        prefix = np.zeros((4, 2), np.int32)
        prefix[0, : len(forced)] = forced
        tokens, lengths, scores = jax.device_get(decoding.beam_search(
            trained.model, trained.variables, src, 2, LEN, 0.6, prefix=prefix,
            **controls.arguments()))
        for k, hypothesis in enumerate(hypotheses[index]):
            assert hypothesis.tokens == tokens[0, k, : lengths[0, k]].tolist()
            assert hypothesis.tokens[: len(forced)] == forced
            assert len(hypothesis.tokens) <= len(ids) + 2
            np.testing.assert_allclose(hypothesis.score, scores[0, k], rtol=1e-5)
    # MBR's candidates, sampled or a beam's, keep the prefix and the controls too.
    for source in mbr.SOURCES:
        picked = infer.decode_hypotheses(
            trained, lines, nbest=1, batch_size=4, warn=lambda message: None, controls=controls,
            prefixes=prefixes, mbr_settings=mbr.MBRSettings(3, source, "exact", 2.0))
        for index in range(3):
            tokens = picked[index][0].tokens
            forced = trained.tgt_vocab.encode(prefixes[index], add_eos=False) if prefixes[index] else []
            assert tokens[: len(forced)] == forced and len(tokens) <= len(lines[index]) + 2
            assert all(tokens[i : i + 2] != tokens[j : j + 2] for i in range(len(tokens) - 1)
                       for j in range(i + 1, len(tokens) - 1))
    with pytest.raises(infer.InputError, match=r"^2 prefix line\(s\) for 5 input line\(s\)$"):
        infer.decode_hypotheses(trained, lines, prefixes=prefixes[:2])


def test_reference_evaluation_decodes_under_the_controls(table):
    variables, model = {"table": table}, TableDecoder()
    controls = decoding.GenerationControls(no_repeat_ngram_size=1, max_len_a=1.0, max_len_b=1.0)
    decode = reference_eval.best_decoder(model, variables, LEN, 2, 0.6, controls)
    expected = decoding.beam_search(model, variables, TABLE_SRC, 2, LEN, 0.6,
                                    **controls.arguments())[0][:, 0]
    np.testing.assert_array_equal(np.asarray(decode(TABLE_SRC)), expected)
    free = decoding.beam_search(model, variables, TABLE_SRC, 2, LEN, 0.6)[0][:, 0]
    assert not np.array_equal(free, expected), "the case should be changed by the controls"
