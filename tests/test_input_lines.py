"""The one input layer of every way of decoding (`flax_s2s.input_lines`): how lines are split and
decoded, and the bad-line loop the decode and score commands share (the exported runner's is
in test_export.py)."""

import pytest

from flax_s2s import infer, input_lines, score
from flax_s2s.data.vocab import SymbolVocab

VOCAB = SymbolVocab.build("0123456789+")


def test_lines_split_at_lf_crlf_and_cr_and_a_bom_goes():
    lines = input_lines.split_lines(b"\xef\xbb\xbf1+2\r\n3+4\r5+6\n\xff7\n\n")
    assert lines[:3] == ["1+2", "3+4", "5+6"] and lines[4] == ""
    assert isinstance(lines[3], UnicodeDecodeError) and len(lines) == 5


def test_a_bom_is_not_read_as_a_symbol_and_strict_fails_on_unknown_symbols():
    """A BOM once decoded to <unk> ("\\ufeff46" gave 146's ids); strict let unknowns through."""
    messages = []
    got = infer.encode_lines(["\ufeff4+6", "4+6 ", "4x6"], VOCAB, 5, messages.append)
    assert got[0] == got[1] == [VOCAB.encode(s, add_eos=False) for s in ["4+6"]][0]
    assert messages == ["line 3: 1 symbol(s) outside the source vocabulary read as <unk>: 'x'"]
    with pytest.raises(input_lines.InputError, match=r"^line 2: 1 symbol\(s\) outside the source "
                       r"vocabulary read as <unk>: 'x' \(--strict\)$"):
        infer.encode_lines(["4+6", "4x6"], VOCAB, 5, messages.append, strict=True)
    with pytest.raises(input_lines.InputError, match=r"^--targets line 1: 1 symbol\(s\) outside "
                       r"the target vocabulary scored as <unk> \(--strict\)$"):
        score.encode_targets(["4y"], VOCAB, 5, messages.append, strict=True)
    assert score.encode_targets(["\ufeff12"], VOCAB, 5, messages.append) == [
        VOCAB.encode("12", add_eos=True)]


def test_options_are_refused_by_one_rule():
    input_lines.check_min_len(5, 6)
    for bad in (6, 50, -1):
        with pytest.raises(input_lines.InputError, match=f"^--min_len={bad}: must be >= 0 and "
                           "below the model's max_tgt_len=6"):
            input_lines.check_min_len(bad, 6, "--min_len")
    for bad in (float("nan"), float("inf"), "x"):
        with pytest.raises(input_lines.InputError, match="must be a finite number"):
            input_lines.check_alpha(bad)


def test_the_evaluate_commands_lexicon_is_read_by_the_same_lines(tmp_path):
    """A BOM once became part of the first word."""
    from flax_s2s.data.cmudict_g2p import read_lexicon

    path = tmp_path / "lexicon.tsv"
    path.write_bytes(b"\xef\xbb\xbfABC\tA B C\r\nDE\tD E\r\n")
    assert read_lexicon(path) == [("ABC", "A B C"), ("DE", "D E")]
