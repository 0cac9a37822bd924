"""Local line-aligned files and TFDS translation datasets by name (a stand-in prepared here)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import tiny_config

from flax_s2s.data import parallel_text, task_data
from flax_s2s.data.vocab import SentencePieceVocab


def _write(directory, split, src: bytes, tgt: bytes):
    (directory / f"{split}.src").write_bytes(src)
    (directory / f"{split}.tgt").write_bytes(tgt)


def test_reads_line_aligned_files(tmp_path):
    _write(tmp_path, "train", b"ein Haus\r\nzwei\n", b"a house\r\ntwo\n")
    _write(tmp_path, "test", b"drei", b"three")  # no final newline
    texts = parallel_text.read_parallel_dir(tmp_path, ("train", "test"))
    assert texts == {"train": [("ein Haus", "a house"), ("zwei", "two")], "test": [("drei", "three")]}


def test_mismatched_line_counts_name_the_file_and_the_first_unpaired_line(tmp_path):
    _write(tmp_path, "train", b"a\nb\nc\n", b"x\ny\n")
    with pytest.raises(ValueError, match=r"train\.src:3: no partner line in .*train\.tgt"):
        parallel_text.read_parallel_dir(tmp_path, ("train",))


def test_empty_file_is_named(tmp_path):
    _write(tmp_path, "validation", b"a\n", b"")
    with pytest.raises(ValueError, match=r"validation\.tgt: empty file"):
        parallel_text.read_parallel_dir(tmp_path, ("validation",))


def test_undecodable_bytes_name_file_and_line(tmp_path):
    _write(tmp_path, "train", b"fine\nstill fine\nbad \xff byte\n", b"1\n2\n3\n")
    with pytest.raises(ValueError, match=r"train\.src:3: not valid UTF-8"):
        parallel_text.read_parallel_dir(tmp_path, ("train",))


def test_missing_split_file_is_named(tmp_path):
    _write(tmp_path, "train", b"a\n", b"b\n")
    with pytest.raises(FileNotFoundError, match=r"test\.src"):
        parallel_text.read_parallel_dir(tmp_path, ("test",))


SENTENCES = [
    ("das Haus ist klein", "the house is small"), ("der Hund ist gross", "the dog is big"),
    ("die Katze schläft", "the cat sleeps"), ("das Buch ist alt", "the book is old"),
]


class StandinTranslate(tfds.core.GeneratorBasedBuilder):
    """Stands in for wmt14_translate/de-en: the same feature structure (a Translation feature with
    languages de and en, supervised keys ("de", "en")), a few sentences generated here."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="de-en")]

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.Translation(languages=("de", "en")),
            supervised_keys=("de", "en"),
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(SENTENCES * 3),
            "validation": self._generate_examples(SENTENCES),
        }

    def _generate_examples(self, pairs):
        for index, (de, en) in enumerate(pairs):
            yield index, {"de": de, "en": en}


@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("standin_tfds"))
    tfds.disable_progress_bar()
    StandinTranslate(data_dir=data_dir, config="de-en", file_format="array_record").download_and_prepare()
    return data_dir


def test_tfds_translation_dataset_by_name_from_its_data_dir(standin_dir):
    name = "standin_translate/de-en"
    texts = parallel_text.read_tfds_translation(name, standin_dir, ("train", "validation"))
    assert sorted(texts["validation"]) == sorted(SENTENCES)
    assert len(texts["train"]) == 3 * len(SENTENCES)
    reverse = parallel_text.read_tfds_translation(
        "standin_translate/de-en", standin_dir, ("validation",), src_key="en", tgt_key="de"
    )
    assert sorted(reverse["validation"]) == sorted((en, de) for de, en in SENTENCES)


def test_tfds_dataset_that_is_not_prepared_fails_without_downloading(tmp_path, standin_dir):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        parallel_text.read_tfds_translation("wmt14_translate/de-en", str(tmp_path), ("train",))
    with pytest.raises(ValueError, match=r"no split\(s\) \['test'\]"):
        parallel_text.read_tfds_translation("standin_translate/de-en", standin_dir, ("test",))
    with pytest.raises(ValueError, match="'fr'"):
        parallel_text.read_tfds_translation("standin_translate/de-en", standin_dir, ("train",), src_key="fr")


def test_tfds_task_trains_a_sentencepiece_vocab_saved_in_the_workdir_and_reused(tmp_path, standin_dir):
    config = tiny_config(task="tfds", tfds_name="standin_translate/de-en", tfds_data_dir=standin_dir,
                         max_src_len=16, max_tgt_len=16, final_eval_split="validation")
    config.vocab.type = "sentencepiece"
    config.vocab.sp_vocab_size = 40
    workdir = str(tmp_path / "run")
    data = task_data.load_task_data(config, workdir, ("train", "validation"))
    assert isinstance(data.tgt_vocab, SentencePieceVocab)
    assert (tmp_path / "run" / "src_vocab.model").exists() and (tmp_path / "run" / "tgt_vocab.model").exists()
    row = data.splits["validation"].tgt[0]
    assert data.tgt_vocab.decode(row) == data.splits["validation"].texts[0][1]

    # A resumed run loads the saved models instead of training new ones (even from other text).
    config.vocab.sp_vocab_size = 30
    again = task_data.load_task_data(config, workdir, ("validation",))
    assert again.tgt_vocab == data.tgt_vocab
    assert np.array_equal(again.splits["validation"].tgt, data.splits["validation"].tgt)
    config.vocab.type = "symbol"
    with pytest.raises(ValueError, match="sentencepiece src vocabulary"):
        task_data.load_task_data(config, workdir, ("validation",))
