"""A workdir records what it was made from (`flax_s2s.data.made_from`): a fine-tune whose
pretrained weights do not load writes nothing into the workdir, and a rerun with another
pretrained directory, or over a replaced vocabulary file, fails naming both before it writes."""

from __future__ import annotations

import importlib
import json
import shutil

import pytest
from conftest import tree_digest
from pretrained_dirs import t5_with_tokenizer, write_parallel_text

from flax_s2s import pretrained, sharding, training
from flax_s2s.data import made_from
from flax_s2s.data.vocab import SentencePieceVocab
from flax_s2s.errors import ConfigError, FileFormatError
from flax_s2s.models.t5 import T5_SPECIAL_TOKENS


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A: a T5 with its tokenizer; B: the same T5 with another tokenizer; A without weights."""
    root = tmp_path_factory.mktemp("made_from")
    a = t5_with_tokenizer(root / "a")
    b = root / "b"
    shutil.copytree(a, b)
    texts = [line.strip() for line in open(write_parallel_text(root / "data") / "train.src")]
    SentencePieceVocab.train(texts * 4, vocab_size=20, special_tokens=T5_SPECIAL_TOKENS).save(
        b / "spiece.model")
    broken = root / "a_without_weights"
    shutil.copytree(a, broken)
    (broken / "model.safetensors").unlink()
    return {"a": a, "b": b, "broken": broken, "data": root / "data"}


def _config(directory, data):
    config = importlib.import_module("configs.finetune_t5").get_config()
    config.pretrained, config.data_path = str(directory), str(data)
    pretrained.configure(config)
    return config


def test_a_fine_tune_whose_weights_do_not_load_writes_no_tokenizer_into_the_workdir(dirs, tmp_path):
    config = _config(dirs["broken"], dirs["data"])
    workdir = tmp_path / "run"
    with pytest.raises(pretrained.PretrainedError, match=r"a_without_weights/model.safetensors: "
                                                         r"no such file"):
        training.prepare_run(config, str(workdir), sharding.make_mesh(config.mesh_shape), ())
    written = [path for path in tree_digest(workdir) if path != "checkpoints"]
    assert written == []  # no vocabulary, no record (only the empty checkpoints directory)


def _prepare(directory, data, workdir):
    """A run's setup in `workdir` (data, vocabularies, model, state); nothing is trained."""
    config = _config(directory, data)
    setup = training.prepare_run(config, str(workdir), sharding.make_mesh(config.mesh_shape), ())
    setup.checkpointer.close()


@pytest.fixture(scope="module")
def made_with_a(dirs, tmp_path_factory):
    """A workdir set up from A, as a run that then failed before its first checkpoint left it."""
    workdir = tmp_path_factory.mktemp("made_with_a") / "run"
    _prepare(dirs["a"], dirs["data"], workdir)
    return workdir


def test_a_rerun_with_another_pretrained_directory_fails_naming_both(dirs, made_with_a, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(made_with_a, workdir)
    before = tree_digest(tmp_path)
    with pytest.raises(ConfigError, match=rf"config.pretrained='{dirs['b']}': {workdir} was made "
                                          rf"from the pretrained directory '{dirs['a']}', and "
                                          r"their spiece.model differ"):
        _prepare(dirs["b"], dirs["data"], workdir)
    assert tree_digest(tmp_path) == before
    made = json.loads((workdir / made_from.MADE_FROM).read_text())
    assert made["pretrained"]["directory"] == str(dirs["a"])
    assert made["vocabularies"] == made_from.vocabulary_hashes(str(workdir))
    assert set(made["vocabularies"]) == {"src_vocab.model", "tgt_vocab.model"}
    (workdir / made_from.MADE_FROM).unlink()  # a workdir from before records were kept
    before = tree_digest(tmp_path)
    with pytest.raises(ConfigError, match=r"the vocabularies in .* are not that checkpoint's"):
        _prepare(dirs["b"], dirs["data"], workdir)
    assert tree_digest(tmp_path) == before


def test_a_vocabulary_file_replaced_since_it_was_recorded_is_named(dirs, made_with_a, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(made_with_a, workdir)
    shutil.copyfile(dirs["b"] / "spiece.model", workdir / "src_vocab.model")
    before = tree_digest(tmp_path)
    with pytest.raises(FileFormatError, match=r"run/src_vocab.model: not the vocabulary this "
                                              r"workdir was made with \(.*made_from.json records"):
        _prepare(dirs["a"], dirs["data"], workdir)
    assert tree_digest(tmp_path) == before
