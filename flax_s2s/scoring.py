"""Teacher-forced scores of given targets: the log-probability a model gives each token of a target
after its source and the target tokens before it, read in one parallel pass (`model.forward`).

One definition for every reader: training's evaluation takes its loss and teacher-forced accuracy
from `teacher_forced`, and the score command (`flax_s2s.score`) prints sums of `target_log_probs`.
The distribution is the one decoding draws from (`decoding.output_log_probs`: PAD and BOS are
never emitted, the rest renormalised), so a target's summed log-probability is the score greedy
decoding or sampling gives that output, and beam search's with alpha 0.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from flax_s2s import decoding
from flax_s2s.models import Seq2Seq, decoder_inputs

Array = jax.Array


class TeacherForced(NamedTuple):
    """What one teacher-forced pass gives, per target position."""

    log_probs: Array  # [batch, tgt_len] float32: log p(target token); 0 at PAD positions
    predicted: Array  # [batch, tgt_len] int32: the most likely token there (never PAD or BOS)


def teacher_forced(
    model: Seq2Seq, variables: Any, src_tokens: Array, tgt_tokens: Array
) -> TeacherForced:
    """Each target token's log-probability given its source and the target tokens before it
    (read behind the model's BOS, `decoder_inputs`), and the token the model finds most likely
    at each position. src_tokens [batch, src_len], tgt_tokens [batch, tgt_len] (ending in EOS,
    then the model's PAD) -> two [batch, tgt_len] arrays (`TeacherForced`).

    A target token decoding never emits (BOS where it is not also EOS) has log-probability -inf.
    """
    specials = model.special_tokens
    encoded = model.encode(variables, src_tokens)
    logits = model.forward(variables, encoded, decoder_inputs(tgt_tokens, specials.bos))
    log_probs = decoding.output_log_probs(logits, specials)
    target = jnp.take_along_axis(log_probs, tgt_tokens[..., None], axis=-1)[..., 0]
    return TeacherForced(
        log_probs=jnp.where(tgt_tokens == specials.pad, 0.0, target),
        predicted=log_probs.argmax(-1).astype(jnp.int32),
    )


@functools.partial(jax.jit, static_argnums=0)
def target_log_probs(model: Seq2Seq, variables: Any, src_tokens: Array, tgt_tokens: Array) -> Array:
    """`teacher_forced(...).log_probs`, jitted (compiled once per model and shapes):
    [batch, tgt_len] float32, 0 at PAD positions; a row's sum is its target's log-probability."""
    return teacher_forced(model, variables, src_tokens, tgt_tokens).log_probs
