"""The one output per input that free-running evaluation scores: greedy, or a beam's best."""

from __future__ import annotations

from typing import Any

import jax

from flax_s2s.decoding.arguments import GenerationControls
from flax_s2s.decoding.beam import beam_search
from flax_s2s.decoding.stepwise import greedy
from flax_s2s.models import Seq2Seq

Array = jax.Array


def best_sequences(
    model: Seq2Seq,
    variables: Any,
    src_tokens: Array,
    max_len: int,
    beam_size: int = 0,
    alpha: float = 0.6,
    min_len: int = 0,
    controls: GenerationControls | None = None,
) -> Array:
    """The one output per input that free-running evaluation scores: greedy when beam_size is 0,
    else the best beam-search hypothesis, under `controls` (None: none).
    [batch, src_len] -> tokens [batch, max_len]."""
    arguments = controls.arguments() if controls is not None else {}
    if beam_size == 0:
        return greedy(model, variables, src_tokens, max_len=max_len, min_len=min_len,
                      **arguments)[0]
    tokens, _, _ = beam_search(
        model, variables, src_tokens, beam_size=beam_size, max_len=max_len, alpha=alpha,
        min_len=min_len, **arguments,
    )
    return tokens[:, 0]
