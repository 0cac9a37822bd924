"""A config's data: the prepared TFDS task, its vocabularies and its tokenized splits."""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from flax_s2s.data import pipeline, tasks
from flax_s2s.data.vocab import SymbolVocab

SRC_VOCAB_FILE, TGT_VOCAB_FILE = "src_vocab.json", "tgt_vocab.json"


@dataclasses.dataclass
class TaskData:
    src_vocab: SymbolVocab
    tgt_vocab: SymbolVocab
    splits: dict[str, pipeline.Examples]


def default_data_dir(workdir: str) -> str:
    """Builders prepare beside the workdir, so runs side by side share them."""
    return os.path.join(os.path.dirname(os.path.abspath(workdir)), "tfds")


def load_vocabs(workdir: str) -> tuple[SymbolVocab, SymbolVocab] | None:
    """The vocabularies a run saved in its workdir, or None when it saved none yet."""
    src_path = os.path.join(workdir, SRC_VOCAB_FILE)
    tgt_path = os.path.join(workdir, TGT_VOCAB_FILE)
    if not (os.path.exists(src_path) and os.path.exists(tgt_path)):
        return None
    return SymbolVocab.load(src_path), SymbolVocab.load(tgt_path)


def load_task_data(
    config: ml_collections.ConfigDict, workdir: str, splits: tuple[str, ...]
) -> TaskData:
    """Prepares `config.task` (once), then tokenizes `splits`.

    Vocabularies are built from the training split on a workdir's first run and saved there; a
    resumed run and the decode CLI load them, so ids never shift under a checkpoint.
    """
    builder = tasks.prepare(config.task, config.data_dir or default_data_dir(workdir))
    texts = {split: pipeline.read_split(builder, split) for split in splits}
    vocabs = load_vocabs(workdir)
    if vocabs is None:
        train = texts["train"] if "train" in texts else pipeline.read_split(builder, "train")
        vocabs = (SymbolVocab.build(s for s, _ in train), SymbolVocab.build(t for _, t in train))
        os.makedirs(workdir, exist_ok=True)
        vocabs[0].save(os.path.join(workdir, SRC_VOCAB_FILE))
        vocabs[1].save(os.path.join(workdir, TGT_VOCAB_FILE))
    src_vocab, tgt_vocab = vocabs
    examples = {
        split: pipeline.tokenize(
            pairs, src_vocab, tgt_vocab, config.max_src_len, config.max_tgt_len,
            config.too_long, split,
        )
        for split, pairs in texts.items()
    }
    return TaskData(src_vocab, tgt_vocab, examples)
