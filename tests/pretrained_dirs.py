"""Pretrained directories that fine-tuning reads, made from the tiny fixtures by code: a copy
of a fixture with a tokenizer trained on a small reversal task (T5's `spiece.model` through
SentencePiece, BART's byte-level BPE `tokenizer.json` through `tokenizers`), and that task as
parallel text files."""

from __future__ import annotations

import pathlib
import shutil

import jax
import numpy as np
from safetensors import safe_open

from flax_s2s.data.vocab import SentencePieceVocab
from flax_s2s.models.t5 import T5_SPECIAL_TOKENS
from flax_s2s.pretrained import export_pretrained, load_pretrained

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
LETTERS = "abcdefgh"


def reversal_texts(count: int, seed: int) -> list[tuple[str, str]]:
    """(words of 1-4 letters, the same reversed) pairs."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        words = ["".join(rng.choice(list(LETTERS), rng.integers(1, 5))) for _ in range(rng.integers(1, 3))]
        text = " ".join(words)
        pairs.append((text, text[::-1]))
    return pairs


def write_parallel_text(directory: pathlib.Path) -> pathlib.Path:
    """{train,validation,test}.{src,tgt} of the reversal task (48 / 8 / 8 lines)."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, (count, seed) in {"train": (48, 0), "validation": (8, 1), "test": (8, 2)}.items():
        pairs = reversal_texts(count, seed)
        (directory / f"{split}.src").write_text("".join(f"{s}\n" for s, _ in pairs))
        (directory / f"{split}.tgt").write_text("".join(f"{t}\n" for _, t in pairs))
    return directory


def _texts() -> list[str]:
    return [text for pair in reversal_texts(200, 3) for text in pair]


def t5_with_tokenizer(directory: pathlib.Path, variant: str = "t5_v1_0") -> pathlib.Path:
    """A copy of a T5 fixture with an `spiece.model` of T5's ids (pad 0, eos 1, unk 2, no bos)."""
    shutil.copytree(FIXTURES / variant, directory)
    vocab = SentencePieceVocab.train(_texts(), vocab_size=24, special_tokens=T5_SPECIAL_TOKENS)
    vocab.save(directory / "spiece.model")
    return directory


def bart_with_tokenizer(directory: pathlib.Path, variant: str = "bart") -> pathlib.Path:
    """A copy of a BART fixture with a byte-level BPE `tokenizer.json` whose specials sit where
    BART's do (<s> 0, <pad> 1, </s> 2, <unk> 3), post-processed as BART's (<s> ... </s>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    shutil.copytree(FIXTURES / variant, directory)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=32, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  show_progress=False)
    tokenizer.train_from_iterator(_texts(), trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def checkpoint_tensors(directory: pathlib.Path) -> dict[str, np.ndarray]:
    """Every tensor of a directory's `model.safetensors`, by name."""
    with safe_open(directory / "model.safetensors", "numpy") as weights:
        return {name: weights.get_tensor(name) for name in weights.keys()}


def assert_export_round_trip(reference: pathlib.Path, out: pathlib.Path) -> dict[str, np.ndarray]:
    """Import `reference`, export it to `out`, import that: the exported tensors are the
    reference's names, float32 dtypes and values (what transformers loads), its config.json and
    tokenizer files are the reference's bytes, no partial directory is left, and the reimported
    variables equal the first import's. Returns the reference's tensors."""
    _, variables = load_pretrained(reference)
    exported_dir = export_pretrained(variables, reference, out)
    original, exported = checkpoint_tensors(reference), checkpoint_tensors(exported_dir)
    assert sorted(exported) == sorted(original)
    for name, tensor in original.items():
        assert exported[name].dtype == tensor.dtype == np.float32, name
        np.testing.assert_array_equal(exported[name], tensor, err_msg=name)
    for file in ("config.json", "sentencepiece.bpe.model", "source.spm", "target.spm",
                 "vocab.json", "spiece.model"):  # the tokenizer travels with the weights
        if (reference / file).is_file():
            assert (exported_dir / file).read_bytes() == (reference / file).read_bytes(), file
    assert [path.name for path in out.parent.iterdir() if "partial" in path.name] == []
    _, again = load_pretrained(exported_dir)
    jax.tree.map(np.testing.assert_array_equal, again, variables)
    return original
