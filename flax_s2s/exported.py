"""Run a decoder file written by `flax_s2s.export` with jax alone (no model code, no config).

```
decoder = ExportedDecoder.load("addition.s2s")
print(decoder.decode_lines(["12+34", "7+8"], beam=True))
tokens, lengths, scores = decoder.greedy(src_tokens)        # src_tokens [batch, src_len]
```
This module imports only the standard library, NumPy, jax and (for a SentencePiece vocabulary)
sentencepiece, so it runs where flax_s2s's models and training are not installed; jax reads the
file with the flatbuffers package.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence

import jax
import numpy as np

_SPECIAL_SYMBOLS = 4  # a symbol vocabulary's first ids: PAD, BOS, EOS, UNK


class _Symbols:
    """A symbol vocabulary from its JSON: ids after the four specials, joined by `separator`."""

    def __init__(self, data: bytes, specials: dict[str, int]):
        spec = json.loads(data.decode("utf-8"))
        self.separator, self.specials = spec["separator"], specials
        self.symbols = ["<pad>", "<s>", "</s>", "<unk>", *spec["symbols"]]
        self.ids = {s: i for i, s in enumerate(self.symbols) if i >= _SPECIAL_SYMBOLS}

    def encode(self, text: str) -> list[int]:
        pieces = list(text) if self.separator == "" else [s for s in text.split(self.separator) if s]
        return [self.ids.get(p, self.specials["unk"]) for p in pieces]

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for token in map(int, ids):
            if token == self.specials["eos"]:
                break
            if token >= _SPECIAL_SYMBOLS and token < len(self.symbols):
                out.append(self.symbols[token])
            elif token == self.specials["unk"]:
                out.append("<unk>")
        return self.separator.join(out)


class _Pieces:
    """A SentencePiece vocabulary from its serialized model."""

    def __init__(self, data: bytes, specials: dict[str, int]):
        import sentencepiece

        self.processor = sentencepiece.SentencePieceProcessor(model_proto=data)
        self.specials = specials

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        kept = []
        for token in map(int, ids):
            if token == self.specials["eos"]:
                break
            if token not in (self.specials["pad"], self.specials["bos"]):
                kept.append(token)
        return self.processor.decode(kept)


class ExportedDecoder:
    """The greedy and beam-search functions of an export file, with its vocabularies."""

    def __init__(self, meta: dict, functions: dict[str, jax.export.Exported], vocabs: dict):
        self.meta, self.functions = meta, functions
        self.src_vocab, self.tgt_vocab = vocabs["src_vocab"], vocabs["tgt_vocab"]
        self.batch_size, self.src_len = meta["batch_size"], meta["src_len"]

    @classmethod
    def load(cls, path: str) -> ExportedDecoder:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("meta.json"))
            functions = {name: jax.export.deserialize(bytearray(archive.read(f"{name}.stablehlo")))
                         for name in ("greedy", "beam_search")}
            kinds = {"symbols": _Symbols, "sentencepiece": _Pieces}
            vocabs = {name: kinds[kind](archive.read(name), meta["special_tokens"])
                      for name, kind in meta["vocabs"].items()}
        return cls(meta, functions, vocabs)

    def greedy(self, src_tokens: np.ndarray, min_len: int = 0) -> tuple[np.ndarray, ...]:
        """src_tokens int32 [batch_size, src_len] -> tokens [batch, max_len], lengths, scores."""
        outputs = self.functions["greedy"].call(np.asarray(src_tokens, np.int32), np.int32(min_len))
        return tuple(np.asarray(x) for x in outputs)

    def beam_search(self, src_tokens: np.ndarray, alpha: float | None = None,
                    min_len: int = 0) -> tuple[np.ndarray, ...]:
        """src_tokens [batch_size, src_len] -> tokens [batch, beam, max_len], lengths, scores;
        alpha defaults to the length penalty the model was trained to be evaluated with."""
        alpha = self.meta["alpha"] if alpha is None else alpha
        outputs = self.functions["beam_search"].call(
            np.asarray(src_tokens, np.int32), np.float32(alpha), np.int32(min_len))
        return tuple(np.asarray(x) for x in outputs)

    def decode_lines(self, lines: Sequence[str], beam: bool = False, min_len: int = 0) -> list[str]:
        """The best output text of each line, in order, in padded batches of the exported shape.
        A line longer than src_len raises ValueError naming it."""
        eos = [self.meta["special_tokens"]["eos"]] if self.meta.get("src_eos") else []
        encoded = [self.src_vocab.encode(line.strip()) + eos for line in lines]
        for number, ids in enumerate(encoded, start=1):
            if len(ids) > self.src_len:
                raise ValueError(f"line {number}: {len(ids)} source symbols exceed src_len="
                                 f"{self.src_len}")
        texts = []
        for start in range(0, len(encoded), self.batch_size):
            chunk = encoded[start : start + self.batch_size]
            src = np.full((self.batch_size, self.src_len), self.meta["src_pad"], np.int32)
            for row, ids in enumerate(chunk):
                src[row, : len(ids)] = ids
            if beam:
                tokens = self.beam_search(src, min_len=min_len)[0][:, 0]
            else:
                tokens = self.greedy(src, min_len)[0]
            texts += [self.tgt_vocab.decode(row) for row in tokens[: len(chunk)]]
        return texts
