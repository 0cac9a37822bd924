"""Ensembles for decoding: several trained models behind the decoder step-function seam.

```
ensemble = Ensemble((model_a, model_b))
tokens, lengths, scores = decoding.greedy(ensemble, (variables_a, variables_b), src_tokens, 32)
```
At every step each member reads the same previous tokens, and the ensemble's distribution over
the next token is the mean of the members' distributions (fairseq and Marian average
probabilities, not logits). Members may differ in architecture and size; they must share the
target vocabulary (its size and special tokens, checked). Greedy, sampling and beam search work
unchanged: the encoded inputs and caches are tuples of the members' own, whose leaves all keep the
batch as their leading axis.

Decoding only: training an ensemble is training its members.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from flax_s2s.decoding import output_log_probs
from flax_s2s.models import Seq2Seq
from flax_s2s.special_tokens import SpecialTokens

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Ensemble:
    """The seam of `Seq2Seq` (encode, init_cache, step) over members; `variables` is the tuple
    of the members' variable dicts, in member order. Hashable, like `Seq2Seq`."""

    members: tuple[Seq2Seq, ...]

    def __post_init__(self):
        # A tuple, so that the ensemble hashes (jit takes it as a static argument).
        object.__setattr__(self, "members", tuple(self.members))
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        sizes = [m.module.tgt_vocab_size for m in self.members]
        if len(set(sizes)) > 1:
            raise ValueError(f"ensemble members must share the target vocabulary; sizes: {sizes}")
        specials = list(dict.fromkeys(m.special_tokens for m in self.members))
        if len(specials) > 1:
            raise ValueError(
                f"ensemble members must share the target vocabulary; special tokens: {specials}"
            )

    @property
    def special_tokens(self) -> SpecialTokens:
        """The members' shared special ids, which decoding starts, stops and pads with."""
        return self.members[0].special_tokens

    def encode(self, variables: tuple[Any, ...], src_tokens: Array) -> tuple[Any, ...]:
        """src_tokens [batch, src_len] -> each member's encoder output."""
        return tuple(m.encode(v, src_tokens) for m, v in zip(self.members, variables, strict=True))

    def init_cache(
        self, variables: tuple[Any, ...], encoded: tuple[Any, ...], max_len: int
    ) -> tuple[Any, ...]:
        """Each member's empty decoder cache for up to `max_len` steps."""
        return tuple(
            m.init_cache(v, e, max_len)
            for m, v, e in zip(self.members, variables, encoded, strict=True)
        )

    def init_beam_cache(
        self, variables: tuple[Any, ...], encoded: tuple[Any, ...], max_len: int, beam_size: int
    ) -> tuple[Any, ...]:
        """Each member's beam-search cache (`Seq2Seq.init_beam_cache`)."""
        return tuple(
            m.init_beam_cache(v, e, max_len, beam_size)
            for m, v, e in zip(self.members, variables, encoded, strict=True)
        )

    def reorder_cache(self, cache: tuple[Any, ...], rows: Array) -> tuple[Any, ...]:
        """Each member's cache reordered by beam, as the member does it alone."""
        return tuple(m.reorder_cache(c, rows) for m, c in zip(self.members, cache, strict=True))

    def step(
        self,
        variables: tuple[Any, ...],
        encoded: tuple[Any, ...],
        cache: tuple[Any, ...],
        prev_tokens: Array,
        position: Array | int,
    ) -> tuple[Array, tuple[Any, ...]]:
        """prev_tokens [batch] -> (log of the mean member probabilities [batch, vocab], caches).

        Each member's distribution is the one it decodes with alone (`output_log_probs`), so an
        ensemble of one decodes exactly as its member does."""
        log_probs, caches = [], []
        for model, member_variables, member_encoded, member_cache in zip(
            self.members, variables, encoded, cache, strict=True
        ):
            logits, member_cache = model.step(
                member_variables, member_encoded, member_cache, prev_tokens, position
            )
            log_probs.append(output_log_probs(logits, self.special_tokens))
            caches.append(member_cache)
        mean = jax.nn.logsumexp(jnp.stack(log_probs), axis=0) - math.log(len(log_probs))
        return mean, tuple(caches)
