"""A config's data: the task's text splits (`registry`), its vocabularies and its tokenized splits.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable

import ml_collections

from flax_s2s import config_checks
from flax_s2s.data import pipeline, token_store
from flax_s2s.data.pretrained_tokenizer import tokenizer_vocabs
from flax_s2s.data.registry import read_task_texts
from flax_s2s.data.vocab import (
    SP_MODEL_TYPES,
    SentencePieceVocab,
    SymbolVocab,
    Vocab,
    load_vocab,
    save_vocab,
    vocab_kind,
)
from flax_s2s.errors import ConfigError

SRC_VOCAB, TGT_VOCAB = "src_vocab", "tgt_vocab"  # + ".json" (symbol) or ".model" (SentencePiece)


@dataclasses.dataclass
class TaskData:
    src_vocab: Vocab
    tgt_vocab: Vocab
    splits: dict[str, pipeline.Examples]


def default_data_dir(workdir: str) -> str:
    """Builders prepare beside the workdir, so runs side by side share them."""
    return os.path.join(os.path.dirname(os.path.abspath(workdir)), "tfds")


# config.vocab.type: a kind built from the train split, or "pretrained": config.pretrained's own
VOCAB_TYPES = ("symbol", "sentencepiece", "pretrained")


def check_config(config: ml_collections.ConfigDict) -> None:
    """The vocabulary's kind and size; a pretrained one needs the checkpoint it comes from."""
    config_checks.one_of(config, "vocab.type", VOCAB_TYPES)
    config_checks.one_of(config, "vocab.sp_model_type", SP_MODEL_TYPES)
    if config.vocab.sp_vocab_size < 5:
        raise ConfigError(f"config.vocab.sp_vocab_size={config.vocab.sp_vocab_size}: must be > 4")
    if config.vocab.type == "pretrained" and not config.pretrained:
        raise ConfigError("config.pretrained is empty, but config.vocab.type='pretrained' reads "
                          "the tokenizer of that checkpoint")


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
    if vocab_config.type == "pretrained":  # whichever kind the checkpoint's tokenizer is; that
        return  # it is this checkpoint's, the trainer checks first (`made_from.check`)
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

    The train split is tokenized under `config.too_long`; every other split is evaluated and
    keeps all its examples (`pipeline.tokenize`). Vocabularies are built from the training split
    on a workdir's first run and saved there; a resumed run and the decode / evaluate CLIs load
    them, so ids never shift under a checkpoint. With `config.token_store`, the train split is
    streamed from its files and kept on disk (`token_store.py`).
    """
    data_dir = config.data_dir or default_data_dir(workdir)
    stored = token_store.stores_train(config, splits)
    in_memory = tuple(split for split in splits if not (stored and split == "train"))
    texts = read_task_texts(config, data_dir,
                            tuple(dict.fromkeys((() if stored else ("train",)) + in_memory)))
    if stored:
        texts["train"] = token_store.TrainText(config, data_dir)  # pairs streamed when iterated
    vocabs = load_vocabs(workdir)
    if vocabs is None:
        if config.vocab.type == "pretrained":  # the checkpoint's tokenizer, each side framed
            vocabs = tokenizer_vocabs(config.pretrained, config.get("src_lang", ""),
                                      config.get("forced_bos", ""))
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
    examples = {  # every split but train is evaluated: it keeps every example
        split: pipeline.tokenize(
            texts[split], src_vocab, tgt_vocab, config.max_src_len, config.max_tgt_len,
            config.too_long, split, config.vocab.src_eos, evaluated=split != "train",
        ) if split in in_memory else token_store.train_examples(
            config, workdir, data_dir, src_vocab, tgt_vocab, texts["train"])
        for split in splits
    }
    return TaskData(src_vocab, tgt_vocab, examples)
