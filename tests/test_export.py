import ast
import inspect
import io
import os
import sys
import zipfile

import jax
import numpy as np
import pytest
from conftest import tree_digest, untrained_symbol_model

from flax_s2s import decoding, export, exported, input_lines, outputs

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
    _check_bad_input(loaded, path, texts)


def _check_bad_input(loaded, path, texts):
    """The exported runner meets bad lines and options as the decode command does: a BOM
    ignored, an empty, too long or non-UTF-8 line printed as "" with a message naming it,
    symbols outside the vocabulary counted; `strict` fails on each; min_len and alpha refused;
    a file that is not a whole export named."""
    messages = []
    bad = ["", "\ufeffabc", "abqc", "abcdea", *input_lines.split_lines(b"\xffa")]
    got = loaded.decode_lines(bad, min_len=2, beam=True, warn=messages.append)
    assert got[1] == texts[0] and got[0] == got[3] == got[4] == "", got  # "abc" is LINES[0]
    assert messages == [
        "line 1: empty input; printing an empty line",
        "line 3: 1 symbol(s) outside the source vocabulary read as <unk>: 'q'",
        "line 4: 6 source symbols exceed the model's max_src_len=4; printing an empty line",
        "line 5: not valid UTF-8 (byte 0xff at offset 0: invalid start byte); printing an empty "
        "line"]
    for line, reason in [("", "empty input"), ("abqc", "outside the source vocabulary"),
                         ("abcdea", "6 source symbols exceed")]:
        with pytest.raises(exported.InputError, match=f"^line 2: .*{reason}.*\\(--strict\\)$"):
            loaded.decode_lines(["a", line], strict=True)
    with pytest.raises(exported.InputError, match="none of the 1 input line"):
        loaded.decode_lines([""], warn=messages.append)
    for call in (lambda: loaded.decode_lines(["a"], min_len=50), lambda: loaded.greedy(
            np.zeros((BATCH, SRC_LEN), np.int32), 5)):
        with pytest.raises(exported.InputError, match="min_len=.*max_tgt_len=5"):
            call()
    with pytest.raises(exported.InputError, match="alpha=nan: must be a finite number"):
        loaded.beam_search(np.zeros((BATCH, SRC_LEN), np.int32), float("nan"))
    data = open(path, "rb").read()
    damaged = {"truncated": data[: len(data) // 2], "not a zip": b"hello",
               "damaged": _with_member(path, "greedy.stablehlo", b"\x10\x00\x00\x00garbage")}
    for name, contents in damaged.items():
        broken = f"{path}.{name.replace(' ', '_')}"
        with open(broken, "wb") as f:
            f.write(contents)
        with pytest.raises(exported.InputError, match=f"^{broken}: not a whole exported decoder "
                           "file .*python -m flax_s2s.cli.export$"):
            exported.ExportedDecoder.load(broken)
    with pytest.raises(exported.InputError, match="cannot read the exported file"):
        exported.ExportedDecoder.load(f"{path}.missing")


def _with_member(path, name, contents):
    """The bytes of the zip archive `path` with member `name` replaced by `contents`."""
    out = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.namelist():
            target.writestr(item, contents if item == name else source.read(item))
    return out.getvalue()


def test_the_loader_imports_no_flax_s2s_code():
    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(exported))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    allowed = {"__future__", "json", "struct", "sys", "zipfile", "collections", "jax", "numpy",
               "sentencepiece", "flax_s2s"}
    assert imported <= allowed, imported
    # its one flax_s2s import, the input layer, is the standard library alone
    for node in ast.walk(ast.parse(inspect.getsource(input_lines))):
        if isinstance(node, ast.ImportFrom | ast.Import):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [
                a.name for a in node.names]
            assert all(n.split(".")[0] in sys.stdlib_module_names | {"__future__"}
                       for n in names), names


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
