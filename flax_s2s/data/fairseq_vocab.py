"""A SentencePiece model in fairseq's id layout, as mBART's tokenizers have it (`FairseqVocab`).

fairseq puts four specials first and shifts SentencePiece's pieces by one:
`<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3 (SentencePiece's own unknown piece, its id 0, maps
here), SentencePiece piece i >= 3 at i + 1, then the added tokens (mBART's language codes, then
`<mask>`) after the last piece, in order. An added token or one of the four specials written in
a text is that token, as transformers' tokenizers read it; the text between is SentencePiece's.
A vocabulary also carries the ids it frames every text with: `prefix` before it (mBART-50's
language code), `suffix` after its `</s>` (mbart-large-cc25's source language code).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from flax_s2s.errors import FileFormatError
from flax_s2s.special_tokens import SpecialTokens

FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3
FAIRSEQ_SPECIAL_TOKENS = SpecialTokens(pad=1, bos=2, eos=2, unk=3)  # the decoder starts from </s>
OFFSET = 1  # SentencePiece id i >= 3 is fairseq id i + OFFSET
# mBART's language codes, in their order after the pieces: mbart-large-cc25's 25
# (MBartTokenizer), then mBART-50's 27 more (MBart50Tokenizer); `<mask>` follows the last.
MBART_LANGUAGE_CODES = (
    "ar_AR", "cs_CZ", "de_DE", "en_XX", "es_XX", "et_EE", "fi_FI", "fr_XX", "gu_IN", "hi_IN",
    "it_IT", "ja_XX", "kk_KZ", "ko_KR", "lt_LT", "lv_LV", "my_MM", "ne_NP", "nl_XX", "ro_RO",
    "ru_RU", "si_LK", "tr_TR", "vi_VN", "zh_CN",
)
MBART50_LANGUAGE_CODES = MBART_LANGUAGE_CODES + (
    "af_ZA", "az_AZ", "bn_IN", "fa_IR", "he_IL", "hr_HR", "id_ID", "ka_GE", "km_KH", "mk_MK",
    "ml_IN", "mn_MN", "mr_IN", "pl_PL", "ps_AF", "pt_XX", "sv_SE", "sw_KE", "ta_IN", "te_IN",
    "th_TH", "tl_XX", "uk_UA", "ur_PK", "xh_ZA", "gl_ES", "sl_SI",
)


class FairseqVocab:
    """SentencePiece pieces in fairseq's ids, added tokens after them, and a text's framing.

    `encode` gives prefix + ids (+ eos + suffix with add_eos); `decode` stops at eos and skips
    the specials and added tokens. Saved as one JSON file: {"sentencepiece": the model (base64),
    "added": [tokens], "prefix": [ids], "suffix": [ids]}.
    """

    separator = " "  # error rates over decoded text count whitespace-separated words
    special_tokens = FAIRSEQ_SPECIAL_TOKENS

    def __init__(self, model_proto: bytes, added: Sequence[str], prefix: Sequence[int] = (),
                 suffix: Sequence[int] = ()) -> None:
        self.model_proto = model_proto
        self._processor = spm.SentencePieceProcessor(model_proto=model_proto)
        self.added = [str(token) for token in added]
        self.prefix = [int(token) for token in prefix]
        self.suffix = [int(token) for token in suffix]
        first_added = self._processor.get_piece_size() + OFFSET
        self._named = {token: i for i, token in enumerate(FAIRSEQ_SPECIALS)}
        self._named.update({token: first_added + i for i, token in enumerate(self.added)})
        self._names = {i: token for token, i in self._named.items()}
        longest_first = sorted(self._named, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")")
        self.unk_count = 0

    def __len__(self) -> int:
        return self._processor.get_piece_size() + OFFSET + len(self.added)

    def _pieces(self, text: str) -> list[int]:
        """SentencePiece's ids of a text without added tokens, in fairseq's layout."""
        unk = self._processor.unk_id()
        return [self.special_tokens.unk if i == unk else i + OFFSET
                for i in self._processor.encode(text)]

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        ids = list(self.prefix)
        for index, part in enumerate(self._split.split(text)):
            if index % 2:  # a named token
                ids.append(self._named[part])
            elif part.strip():
                pieces = self._pieces(part)
                self.unk_count += pieces.count(self.special_tokens.unk)
                ids.extend(pieces)
        return ids + [self.special_tokens.eos] + self.suffix if add_eos else ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> detokenized text, stopping at the first EOS; specials and added tokens
        (language codes) skipped."""
        kept, first_added = [], len(self) - len(self.added)
        for token in ids:
            token = int(token)
            if token == self.special_tokens.eos:
                break
            if len(FAIRSEQ_SPECIALS) <= token < first_added:  # a piece
                kept.append(token - OFFSET)
        return self._processor.decode(kept)

    def token_text(self, token: int) -> str:
        """The piece of one id ("▁the"), a special or added token by its name ("en_XX")."""
        token = int(token)
        if token in self._names:
            return self._names[token]
        return self._processor.id_to_piece(token - OFFSET) if 0 <= token < len(self) else f"<{token}>"

    def token_id(self, token: str) -> int:
        """The id of a token given by name ("ro_RO", "</s>", a piece "▁the") or as digits."""
        if token.isdigit() and int(token) < len(self):
            return int(token)
        if token in self._named:
            return self._named[token]
        piece = self._processor.piece_to_id(token)
        if piece == self._processor.unk_id() and token != self._processor.id_to_piece(piece):
            raise ValueError(f"token {token!r} is not in the vocabulary (a language code such as "
                             f"{self.added[:3]}, a piece or an id below {len(self)})")
        return piece + OFFSET

    def framed(self, prefix: Sequence[int] = (), suffix: Sequence[int] = ()) -> FairseqVocab:
        """The same vocabulary with another framing."""
        return FairseqVocab(self.model_proto, self.added, prefix, suffix)

    def to_dict(self) -> dict:
        return {"sentencepiece": base64.b64encode(self.model_proto).decode("ascii"),
                "added": self.added, "prefix": self.prefix, "suffix": self.suffix}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> FairseqVocab:
        """The vocabulary `save` wrote; a file that is not one raises FileFormatError naming it."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            proto = base64.b64decode(data["sentencepiece"], validate=True)
            return cls(proto, data["added"], data["prefix"], data["suffix"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError,
                RuntimeError) as error:
            raise FileFormatError(f"{path}: not a fairseq vocabulary ({error}; expected JSON "
                                  '{"sentencepiece": base64, "added": [tokens], "prefix": [ids], '
                                  '"suffix": [ids]})') from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FairseqVocab) and self.to_dict() == other.to_dict()
