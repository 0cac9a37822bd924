"""SentencePiece models whose pieces take the ids of another table: Marian's tokenizers (source.spm
and target.spm over one vocab.json) and PEGASUS's (spiece.model behind 103 reserved ids).

```
source, target = marian_vocabs("path/to/opus-mt-en-de", specials)   # from its own files
vocab = pegasus_vocab("path/to/pegasus-xsum", specials)
vocab.encode("Hello world.")   # pieces of the SentencePiece model, by the table's ids, + </s>
```
As transformers' MarianTokenizer and PegasusTokenizer read them: a piece the table lacks is unk;
Marian's texts may start with a language code (">>de<<"), one id of vocab.json; Marian's
punctuation normalisation (sacremoses, when installed) is not applied.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pathlib
from collections.abc import Iterable, Sequence

import sentencepiece as spm

from flax_s2s.errors import FileFormatError
from flax_s2s.hf_files import PretrainedError
from flax_s2s.special_tokens import SpecialTokens

PEGASUS_OFFSET = 103  # PegasusTokenizer's: ids below the SentencePiece pieces' own (from 2 on)
PEGASUS_RESERVED = ("<pad>", "</s>", "<mask_1>", "<mask_2>")


class PieceVocab:
    """A SentencePiece model with a piece table: `encode` gives each piece's index in `pieces`
    (unk where it is none), then eos; `decode` stops at eos, skips the ids in `skipped` and
    detokenizes the pieces with the SentencePiece model. `language_codes`: a text starting with
    ">>xx<<" (a piece of the table) gives that piece's id first, as Marian's tokenizer does.
    Saved as one JSON file (the model base64-encoded)."""

    separator = " "  # error rates over decoded text count whitespace-separated words

    def __init__(self, model_proto: bytes, pieces: Sequence[str], special_tokens: SpecialTokens,
                 skipped: Iterable[int] = (), language_codes: bool = False) -> None:
        self.model_proto = model_proto
        self._processor = spm.SentencePieceProcessor(model_proto=model_proto)
        self.pieces = list(pieces)
        self._ids: dict[str, int] = {}
        for index, piece in enumerate(self.pieces):
            self._ids.setdefault(piece, index)
        self.special_tokens = special_tokens
        self.skipped = sorted({int(token) for token in skipped})
        self._skip = set(self.skipped) | set(special_tokens.never_emitted)
        self.language_codes = language_codes
        self.unk_count = 0

    def __len__(self) -> int:
        return len(self.pieces)

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        code, text = self._language_code(text)
        pieces = code + self._processor.encode(text, out_type=str)
        unk = self.special_tokens.unk
        ids = [self._ids.get(piece, unk) for piece in pieces]
        self.unk_count += sum(token == unk for token in ids)
        return ids + [self.special_tokens.eos] if add_eos else ids

    def _language_code(self, text: str) -> tuple[list[str], str]:
        """([">>xx<<"], the rest) for a text that starts with a language code, else ([], text)."""
        end = text.find("<<") if self.language_codes and text.startswith(">>") else -1
        return ([text[: end + 2]], text[end + 2:]) if end != -1 else ([], text)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> detokenized text, stopping at the first eos, skipping pad, bos and `skipped`."""
        pieces = []
        for token in ids:
            token = int(token)
            if token == self.special_tokens.eos:
                break
            if token not in self._skip and 0 <= token < len(self):
                pieces.append(self.pieces[token])
        return self._processor.decode_pieces(pieces).replace("▁", " ").strip()

    def token_text(self, token: int) -> str:
        token = int(token)
        return self.pieces[token] if 0 <= token < len(self) else f"<{token}>"

    def to_dict(self) -> dict:
        return {"sentencepiece": base64.b64encode(self.model_proto).decode("ascii"),
                "pieces": self.pieces, "special_tokens": dataclasses.asdict(self.special_tokens),
                "skipped": self.skipped, "language_codes": self.language_codes}

    def save(self, path: str | pathlib.Path) -> None:
        pathlib.Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | pathlib.Path) -> PieceVocab:
        """The vocabulary `save` wrote; a file that is not one raises FileFormatError naming it."""
        try:
            data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
            return cls(base64.b64decode(data["sentencepiece"]), data["pieces"],
                       SpecialTokens(**data["special_tokens"]), data["skipped"], data["language_codes"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError,
                RuntimeError) as error:
            raise FileFormatError(f"{path}: not a piece vocabulary ({error}; expected JSON "
                                  '{"sentencepiece", "pieces", "special_tokens", "skipped", '
                                  '"language_codes"})') from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PieceVocab) and self.to_dict() == other.to_dict()


def _read_spm(path: pathlib.Path) -> bytes:
    if not path.is_file():
        raise PretrainedError(f"{path}: no such file (the checkpoint's SentencePiece model)")
    proto = path.read_bytes()
    try:
        spm.SentencePieceProcessor(model_proto=proto)
    except RuntimeError:
        raise PretrainedError(f"{path}: not a SentencePiece model") from None
    return proto


def _tokenizer_config(directory: pathlib.Path) -> dict:
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PretrainedError(f"{path}: not a JSON object ({error})") from None
    return config if isinstance(config, dict) else {}


def marian_table(directory: pathlib.Path) -> list[str]:
    """vocab.json's pieces by id. Fails on separate source and target tables (target_vocab.json)
    and on ids that are not 0 .. n - 1."""
    if (directory / "target_vocab.json").is_file() or _tokenizer_config(directory).get("separate_vocabs"):
        raise PretrainedError(f"{directory}: separate source and target vocabularies "
                              "(target_vocab.json) are not implemented; one vocab.json is")
    path = directory / "vocab.json"
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PretrainedError(f"{path}: not a readable JSON vocabulary ({error})") from None
    if not isinstance(table, dict) or sorted(table.values()) != list(range(len(table))):
        raise PretrainedError(f"{path}: expected {{piece: id}} with the ids 0 .. n - 1")
    pieces = [""] * len(table)
    for piece, index in table.items():
        pieces[index] = piece
    return pieces


def marian_vocabs(directory: str | pathlib.Path, specials: SpecialTokens) -> tuple[PieceVocab, PieceVocab]:
    """Marian's source and target vocabularies: source.spm and target.spm, each over vocab.json's
    ids, with `specials` (config.json's) and vocab.json's <unk>; decoding skips pad, eos and unk."""
    directory = pathlib.Path(directory)
    pieces = marian_table(directory)
    if "<unk>" not in pieces:
        raise PretrainedError(f"{directory / 'vocab.json'}: no <unk> piece")
    specials = dataclasses.replace(specials, unk=pieces.index("<unk>"))
    skipped = (specials.pad, specials.eos, specials.unk)
    return tuple(PieceVocab(_read_spm(directory / name), pieces, specials, skipped, language_codes=True)
                 for name in ("source.spm", "target.spm"))


def pegasus_vocab(directory: str | pathlib.Path, specials: SpecialTokens) -> PieceVocab:
    """PEGASUS's vocabulary: <pad> 0, </s> 1, <mask_1> 2, <mask_2> 3, <unk_2> .. <unk_102>, then
    spiece.model's pieces from its third on (<unk> first, at 105), as PegasusTokenizer lays them
    out (tokenizer_config.json's `offset`, 103 by default). Decoding skips the 106 ids before the
    first ordinary piece. unk is 2 + the offset, whatever `specials` says."""
    directory = pathlib.Path(directory)
    offset = int(_tokenizer_config(directory).get("offset", PEGASUS_OFFSET))
    proto = _read_spm(directory / "spiece.model")
    processor = spm.SentencePieceProcessor(model_proto=proto)
    own = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    pieces = [*PEGASUS_RESERVED, *(f"<unk_{i}>" for i in range(2, offset)), *own[2:]]
    specials = dataclasses.replace(specials, unk=offset + processor.unk_id())
    return PieceVocab(proto, pieces, specials, skipped=range(offset + 3))
