"""Run a decoder file written by `flax_s2s.export` with jax alone (no model code, no config).

```
decoder = ExportedDecoder.load("addition.s2s")
print(decoder.decode_lines(["12+34", "7+8"], beam=True))
tokens, lengths, scores = decoder.greedy(src_tokens)        # src_tokens [batch, src_len]
```
This module imports only the standard library, NumPy, jax, (for a SentencePiece vocabulary)
sentencepiece and `flax_s2s.input_lines` (itself the standard library alone), so it runs where
flax_s2s's models and training are not installed; jax reads the file with the flatbuffers package.
Its lines are read and checked as the decode command reads its own (`flax_s2s.input_lines`:
a BOM ignored, a line not UTF-8, empty or too long printed as "" with a message, symbols outside
the vocabulary counted; with `strict`, an InputError), and so are `min_len` and `alpha`.
"""

from __future__ import annotations

import json
import struct
import sys
import zipfile
from collections.abc import Callable, Sequence

import jax
import numpy as np

from flax_s2s import input_lines
from flax_s2s.input_lines import InputError

_SPECIAL_SYMBOLS = 4  # a symbol vocabulary's first ids: PAD, BOS, EOS, UNK


class _Symbols:
    """A symbol vocabulary from its JSON: ids after the four specials, joined by `separator`."""

    def __init__(self, data: bytes, specials: dict[str, int]):
        spec = json.loads(data.decode("utf-8"))
        self.separator, self.specials = spec["separator"], specials
        self.symbols = ["<pad>", "<s>", "</s>", "<unk>", *spec["symbols"]]
        self.ids = {s: i for i, s in enumerate(self.symbols) if i >= _SPECIAL_SYMBOLS}

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """(ids, the symbols outside the vocabulary, read as UNK)."""
        pieces = list(text) if self.separator == "" else [s for s in text.split(self.separator) if s]
        unknown = [p for p in pieces if p not in self.ids]
        return [self.ids.get(p, self.specials["unk"]) for p in pieces], unknown

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

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """(ids, []): a piece outside the vocabulary is counted by its UNK id alone."""
        return self.processor.encode(text), []

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
        """The decoder in the file `path`; InputError naming it when it is missing, not a zip
        archive, truncated or damaged."""
        try:
            with zipfile.ZipFile(path) as archive:
                meta = json.loads(archive.read("meta.json"))
                functions = {name: jax.export.deserialize(
                    bytearray(archive.read(f"{name}.stablehlo")))
                    for name in ("greedy", "beam_search")}
                kinds = {"symbols": _Symbols, "sentencepiece": _Pieces}
                vocabs = {name: kinds[kind](archive.read(name), meta["special_tokens"])
                          for name, kind in meta["vocabs"].items()}
        except OSError as error:
            raise InputError(f"cannot read the exported file {path!r}: {error.strerror}") from None
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, IndexError, RuntimeError,
                struct.error) as error:  # damaged contents fail inside jax.export or json
            raise InputError(f"{path}: not a whole exported decoder file ({type(error).__name__}: "
                             f"{str(error)[:200]}); write it again with python -m "
                             "flax_s2s.cli.export") from None
        return cls(meta, functions, vocabs)

    def greedy(self, src_tokens: np.ndarray, min_len: int = 0) -> tuple[np.ndarray, ...]:
        """src_tokens int32 [batch_size, src_len] -> tokens [batch, max_len], lengths, scores."""
        input_lines.check_min_len(min_len, self.meta["max_len"])
        outputs = self.functions["greedy"].call(np.asarray(src_tokens, np.int32), np.int32(min_len))
        return tuple(np.asarray(x) for x in outputs)

    def beam_search(self, src_tokens: np.ndarray, alpha: float | None = None,
                    min_len: int = 0) -> tuple[np.ndarray, ...]:
        """src_tokens [batch_size, src_len] -> tokens [batch, beam, max_len], lengths, scores;
        alpha defaults to the length penalty the model was trained to be evaluated with."""
        alpha = self.meta["alpha"] if alpha is None else alpha
        input_lines.check_alpha(alpha)
        input_lines.check_min_len(min_len, self.meta["max_len"])
        outputs = self.functions["beam_search"].call(
            np.asarray(src_tokens, np.int32), np.float32(alpha), np.int32(min_len))
        return tuple(np.asarray(x) for x in outputs)

    def decode_lines(
        self, lines: Sequence[str | UnicodeDecodeError], beam: bool = False, min_len: int = 0,
        strict: bool = False, warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    ) -> list[str]:
        """The best output text of each line, in order, in padded batches of the exported shape;
        "" for a line that cannot be decoded (not UTF-8, empty, over src_len), reported through
        `warn` (`strict`: an InputError naming the line). InputError when no line can be."""
        input_lines.check_min_len(min_len, self.meta["max_len"])
        eos = [self.meta["special_tokens"]["eos"]] if self.meta.get("src_eos") else []

        def encode(text: str) -> tuple[list[int], list[str]]:
            ids, unknown = self.src_vocab.encode(text)
            return ids + eos, unknown

        encoded = input_lines.encode_checked(lines, encode, self.src_len,
                                             self.meta["special_tokens"]["unk"], warn, strict)
        rows = [i for i, ids in enumerate(encoded) if ids is not None]
        if lines and not rows:
            raise InputError(f"none of the {len(lines)} input line(s) could be decoded")
        texts = [""] * len(lines)
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            src = np.full((self.batch_size, self.src_len), self.meta["src_pad"], np.int32)
            for row, index in enumerate(chunk):
                src[row, : len(encoded[index])] = encoded[index]
            if beam:
                tokens = self.beam_search(src, min_len=min_len)[0][:, 0]
            else:
                tokens = self.greedy(src, min_len)[0]
            for row, index in enumerate(chunk):
                texts[index] = self.tgt_vocab.decode(tokens[row])
        return texts
