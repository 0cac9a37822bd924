"""The ids of a vocabulary's special tokens, as one small frozen value.

A vocabulary provides them (`vocab.special_tokens`), the model config carries them
(`model.special_tokens`), and everything that pads, starts, stops or masks reads them from there:
decoding, teacher forcing, metrics, the pipeline. Nothing else defines a special id.

```
SpecialTokens()                           # pad 0, bos 1, eos 2, unk 3 (the default)
SpecialTokens(pad=0, bos=0, eos=1, unk=2) # T5: the decoder starts from the pad token
SpecialTokens(pad=1, bos=2, eos=2, unk=3) # BART: the decoder starts from eos (`</s>`)
SpecialTokens.from_hf_config(hf)          # a pretrained checkpoint's, from its config.json
```
This module imports nothing of flax_s2s, so models and data can both depend on it.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    """Special token ids; hashable, so a model holding them stays a static jit argument.

    Attributes:
      pad: fills padded batches and every position after EOS; never counts in a loss.
      bos: the token the decoder reads at position 0. It may equal `pad` (T5), since position 0
        is never padding, or `eos` (BART, whose decoder starts from `</s>`), since what the
        decoder reads at position 0 is never an output; it may not equal `unk`.
      eos: ends a target sequence; decoding stops a row at it.
      unk: what a vocabulary maps unknown symbols to.
    """

    pad: int = 0
    bos: int = 1
    eos: int = 2
    unk: int = 3

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"special token {name}={value!r}: must be an int >= 0")
        distinct = {"pad": self.pad, "eos": self.eos, "unk": self.unk}
        if len(set(distinct.values())) < 3 or self.bos == self.unk:
            raise ValueError(
                f"special tokens {self}: pad, eos and unk must differ, and bos may share an id "
                "only with pad or eos"
            )

    @property
    def never_emitted(self) -> tuple[int, ...]:
        """The ids a decoder never produces: pad, and bos unless it is also eos (which ends
        every output); one id when pad and bos are the same."""
        never = (self.pad,) if self.bos == self.eos else (self.pad, self.bos)
        return tuple(dict.fromkeys(never))

    def real_decoder_inputs(self, tokens: Any, positions: Any) -> Any:
        """bool like `tokens`: the decoder inputs that are not padding. Position 0 always is: it
        reads bos, which may share pad's id. tokens [..., length] with positions [length], or
        tokens [batch] with a scalar position; NumPy or JAX arrays."""
        return (tokens != self.pad) | (positions == 0)

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> SpecialTokens:
        """The ids of a pretrained checkpoint, from its config.json (as a dict): pad, eos and the
        decoder's start token (`decoder_start_token_id`) as it names them, else its
        `model_type`'s defaults (`PRETRAINED_DEFAULTS`). unk is the tokenizer's (config.json has
        none). A model whose decoder starts from pad (T5) starts from config.json's pad."""
        kind = hf.get("model_type")
        if kind not in PRETRAINED_DEFAULTS:
            raise ValueError(f"model_type {kind!r} is not one of {list(PRETRAINED_DEFAULTS)}")
        defaults = PRETRAINED_DEFAULTS[kind]
        pad = hf.get("pad_token_id", defaults.pad)
        start = pad if defaults.bos == defaults.pad else defaults.bos
        return cls(pad=pad, bos=hf.get("decoder_start_token_id", start),
                   eos=hf.get("eos_token_id", defaults.eos), unk=defaults.unk)

    def check_fits(self, vocab_size: int) -> None:
        """Fails unless every special id is below `vocab_size`."""
        largest = max(self.pad, self.bos, self.eos, self.unk)
        if largest >= vocab_size:
            raise ValueError(f"special tokens {self} do not fit a vocabulary of {vocab_size}")


DEFAULT_SPECIAL_TOKENS = SpecialTokens()  # SymbolVocab's ids, and what a model has unless told
# The ids of each pretrained architecture (config.json's `model_type`) where its config.json is
# silent: T5's decoder starts from the pad token, BART's and mBART's from eos (`</s>`).
PRETRAINED_DEFAULTS = {
    "t5": SpecialTokens(pad=0, bos=0, eos=1, unk=2),
    "bart": SpecialTokens(pad=1, bos=2, eos=2, unk=3),
    "mbart": SpecialTokens(pad=1, bos=2, eos=2, unk=3),  # fairseq's ids, as BART's
    # Marian's and PEGASUS's decoders start from pad; Marian's pad is its last id (opus-mt-en-de's
    # here), PEGASUS's unk sits after its tokenizer's 103 reserved ids
    "marian": SpecialTokens(pad=58100, bos=58100, eos=0, unk=1),
    "pegasus": SpecialTokens(pad=0, bos=0, eos=1, unk=105),
}
