"""No command deletes or overwrites what it did not write (`flax_s2s.outputs`): the pretrained
export, the export file and the report refuse an existing output unless --overwrite, never replace
a workdir, an input or a directory holding one, and leave nothing behind when a write fails.
Every case hashes the whole tree before and after: nothing outside the command's output moves."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import pytest
from conftest import ROOT, tree_digest

from flax_s2s import outputs, report
from flax_s2s.cli import export_pretrained as export_pretrained_cli
from flax_s2s.pretrained import export as pretrained_export
from flax_s2s.pretrained import load_pretrained

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture
def tree(tmp_path):
    """A folder of runs (one a workdir with checkpoints, metrics and vocabularies), the reference
    pretrained directory, an unrelated directory and a file."""
    workdir = tmp_path / "runs" / "run1"
    (workdir / "checkpoints" / "4" / "state").mkdir(parents=True)
    (workdir / "checkpoints" / "4" / "state" / "data").write_bytes(b"weights")
    (workdir / "metrics.jsonl").write_text(
        json.dumps({"split": "train", "step": 1, "loss": 1.0}) + "\n")
    (workdir / "src_vocab.json").write_text("{}")
    shutil.copytree(FIXTURES / "t5_v1_0", tmp_path / "t5")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    (tmp_path / "file.txt").write_text("keep me too")
    return tmp_path


@pytest.fixture(scope="module")
def t5_variables():
    return load_pretrained(FIXTURES / "t5_v1_0")[1]


@pytest.mark.parametrize("out, overwrite, message", [
    ("runs/run1", False, r"runs/run1 is a training workdir; it is never replaced, even with "
                         r"--overwrite"),
    ("runs/run1", True, r"runs/run1 is a training workdir; it is never replaced"),
    ("runs", True, r"runs holds .*runs/run1, which is a training workdir; it is never replaced"),
    ("t5", True, r"t5 is an input of this command; it is never replaced"),
    (".", True, r"holds .*t5, which is an input of this command"),
    ("notes", False, r"notes exists; pass --overwrite to replace it"),
    ("notes", True, r"notes holds .*todo.txt, which this command does not write; it is not "
                    r"replaced, even with --overwrite"),
    ("file.txt", True, r"file.txt exists and is not a directory; --out names the directory"),
])
def test_the_pretrained_export_never_deletes_what_it_did_not_write(tree, t5_variables, out,
                                                                   overwrite, message):
    before = tree_digest(tree)
    with pytest.raises(outputs.OutputError, match=message):
        pretrained_export.export_pretrained(t5_variables, tree / "t5", tree / out, overwrite)
    assert tree_digest(tree) == before


def test_the_export_pretrained_command_refuses_its_own_workdir_in_one_line(tree, capsys):
    before = tree_digest(tree)
    workdir = str(tree / "runs" / "run1")
    for extra in ([], ["--overwrite"]):
        with pytest.raises(SystemExit) as exit_:
            export_pretrained_cli.main(["--workdir", workdir, "--out", workdir, *extra])
        message = str(exit_.value.code)
        assert message.startswith(f"error: {workdir} is a training workdir; it is never "
                                  "replaced, even with --overwrite")
        assert "\n" not in message
    assert tree_digest(tree) == before


def test_an_export_is_replaced_only_with_overwrite_and_leaves_no_partial_copy(tree, t5_variables):
    out = tree / "exports" / "t5_ft"  # its parent is made
    pretrained_export.export_pretrained(t5_variables, tree / "t5", out)
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "model.safetensors"]
    first = tree_digest(tree)
    with pytest.raises(outputs.OutputError, match=r"t5_ft exists; pass --overwrite"):
        pretrained_export.export_pretrained(t5_variables, tree / "t5", out)
    assert tree_digest(tree) == first
    changed = jax.tree.map(lambda weight: weight + 1, t5_variables)
    pretrained_export.export_pretrained(changed, tree / "t5", out, overwrite=True)
    after = tree_digest(tree)
    assert os.listdir(tree / "exports") == ["t5_ft"]  # no partial or old copy beside it
    assert {k for k in after if after[k] != first.get(k)} == {"exports/t5_ft/model.safetensors"}


def test_a_failed_export_leaves_nothing_behind(tree, t5_variables, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pretrained_export, "save_file", fail)
    before = tree_digest(tree)
    with pytest.raises(OSError, match="No space left"):  # a new directory, and its parents
        pretrained_export.export_pretrained(t5_variables, tree / "t5", tree / "new" / "t5_ft")
    assert tree_digest(tree) == before
    monkeypatch.undo()
    pretrained_export.export_pretrained(t5_variables, tree / "t5", tree / "old")
    before = tree_digest(tree)
    monkeypatch.setattr(pretrained_export, "save_file", fail)
    with pytest.raises(OSError, match="No space left"):  # an earlier export stays as it was
        pretrained_export.export_pretrained(t5_variables, tree / "t5", tree / "old", overwrite=True)
    assert tree_digest(tree) == before


def test_a_report_never_lands_in_a_workdir_and_is_replaced_only_with_overwrite(tree):
    workdir = str(tree / "runs" / "run1")
    before = tree_digest(tree)
    for out in (workdir, str(tree / "runs")):
        with pytest.raises(outputs.OutputError, match=r"is never replaced"):
            report.write_report([workdir], out, attention=False, overwrite=True)
    assert tree_digest(tree) == before
    out = os.path.join(workdir, "report")
    report.write_report([workdir], out, attention=False)
    written = tree_digest(tree)
    with pytest.raises(outputs.OutputError, match=r"report exists; pass --overwrite"):
        report.write_report([workdir], out, attention=False)
    assert tree_digest(tree) == written
    report.write_report([workdir], out, attention=False, overwrite=True)
    assert sorted(os.listdir(workdir)) == ["checkpoints", "metrics.jsonl", "report",
                                           "src_vocab.json"]


@pytest.mark.slow
def test_the_export_command_at_a_workdir_exits_with_one_line_and_changes_nothing(tree):
    workdir = str(tree / "runs" / "run1")
    before = tree_digest(tree)
    result = subprocess.run(
        [sys.executable, "-m", "flax_s2s.cli.export", f"--workdir={workdir}",
         f"--out={tree / 'notes'}"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tree / 'notes'} exists and is not a file; --out names the file to write: "
        "choose another --out"]
    assert tree_digest(tree) == before
