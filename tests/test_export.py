import ast
import inspect
import os

import jax
import numpy as np
import pytest
from conftest import tree_digest, untrained_symbol_model

from flax_s2s import decoding, export, exported, outputs

SRC_LEN, MAX_LEN, BATCH, BEAM = 4, 5, 3, 2
LINES = ["abc", "d", "eeee", "ab"]  # two batches, the second padded


@pytest.fixture(scope="module")
def trained():
    return untrained_symbol_model(4, BATCH, SRC_LEN, MAX_LEN)


def _src(trained):
    src = np.zeros((BATCH, SRC_LEN), np.int32)
    for row, line in enumerate(LINES[:BATCH]):
        src[row, : len(line)] = trained.src_vocab.encode(line, add_eos=False)
    return src


def _assert_same(got, expected):
    """Equal tokens and lengths; scores to float32 rounding (the weights, constants in the
    export, may fuse into another summation order)."""
    tokens, lengths, scores = jax.device_get(got)
    np.testing.assert_array_equal(tokens, expected[0])
    np.testing.assert_array_equal(lengths, expected[1])
    np.testing.assert_allclose(scores, expected[2], rtol=1e-5)


def _check_against_library(trained, greedy, beam_search):
    """greedy(src, min_len) and beam_search(src, alpha, min_len) give the library's outputs;
    returns the library's beam outputs at min_len 2."""
    src, model, variables = _src(trained), trained.model, trained.variables
    for min_len in (0, 2):
        expected = jax.device_get(decoding.greedy(model, variables, src, MAX_LEN, min_len))
        _assert_same(greedy(src, np.int32(min_len)), expected)
        expected = jax.device_get(decoding.beam_search(model, variables, src, BEAM, MAX_LEN, 0.6,
                                                       min_len))
        _assert_same(beam_search(src, np.float32(0.6), np.int32(min_len)), expected)
    return expected


def test_the_exported_functions_decode_as_the_library_does(trained):
    """The StableHLO, weights inside, before serialisation (which needs flatbuffers)."""
    functions = export.export_functions(trained, BATCH, BEAM)
    _check_against_library(trained, functions["greedy"].call, functions["beam_search"].call)


def test_the_exported_file_decodes_as_the_library_does(trained, tmp_path):
    path = str(tmp_path / "model.s2s")
    export.export_trained(trained, path, batch_size=BATCH, beam_size=BEAM)
    loaded = exported.ExportedDecoder.load(path)
    expected = _check_against_library(trained, loaded.greedy, loaded.beam_search)
    texts = [trained.tgt_vocab.decode(row) for row in expected[0][:, 0]]
    assert loaded.decode_lines(LINES, beam=True, min_len=2)[:BATCH] == texts
    with pytest.raises(ValueError, match="line 2: 6 source symbols exceed src_len=4"):
        loaded.decode_lines(["a", "abcdea"])


def test_the_loader_imports_no_flax_s2s_code():
    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(exported))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "json", "zipfile", "collections", "jax", "numpy",
                        "sentencepiece"}, imported


def test_the_export_file_replaces_only_an_earlier_export_and_only_with_overwrite(trained, tmp_path):
    """A directory, a workdir, a file it did not write (a workdir's metrics.jsonl) are refused
    (before anything compiles); an earlier export is replaced with --overwrite; nothing else in
    the tree changes and no partial file is left."""
    workdir = tmp_path / "run"
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "file.txt").write_text("keep me")
    before = tree_digest(tmp_path)
    cases = [("notes", False, r"notes exists and is not a file; --out names the file to write"),
             ("run", True, r"run is a training workdir; it is never replaced"),
             ("file.txt", False, r"file.txt exists; pass --overwrite to replace it"),
             ("file.txt", True, r"file.txt holds other contents \(not an earlier output\), which "
                                r"this command does not write"),
             ("run/metrics.jsonl", True, r"metrics.jsonl holds other contents")]
    for out, overwrite, message in cases:
        with pytest.raises(outputs.OutputError, match=message):
            export.export_trained(trained, str(tmp_path / out), BATCH, BEAM, overwrite=overwrite)
    assert tree_digest(tmp_path) == before
    out = tmp_path / "model.s2s"
    export.export_trained(trained, str(out), BATCH, BEAM)
    written = tree_digest(tmp_path)
    with pytest.raises(outputs.OutputError, match=r"model.s2s exists; pass --overwrite"):
        export.export_trained(trained, str(out), BATCH, BEAM)
    export.export_trained(trained, str(out), BATCH, 1, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["file.txt", "model.s2s", "notes", "run"]
    assert {k for k, v in tree_digest(tmp_path).items() if written.get(k) != v} == {"model.s2s"}
    assert exported.ExportedDecoder.load(str(out)).meta["beam_size"] == 1
