"""Decoder-input noise: teacher forcing on gold inputs of which a fraction is replaced by random
tokens (`config.teacher_forcing.input_noise`).

The control that separates "the decoder reads noisy inputs" from "the decoder reads its own
predictions" (scheduled sampling): every real decoder input but each example's first (its BOS)
is replaced, independently with probability `rate`, by a token drawn uniformly from the
vocabulary's non-special ids. Padding keeps its tokens. The inputs stay one parallel tensor, so
the model trains on its teacher-forced `forward`, packed rows included.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from flax_s2s import config_checks
from flax_s2s.errors import ConfigError
from flax_s2s.forcing import always_gold
from flax_s2s.special_tokens import SpecialTokens

Array = jax.Array
# Folded into the train step's key to give the noise key, a stream apart from the dropout keys
# (split from the same key) and from scheduled sampling's (another constant).
_NOISE_STREAM = 0x4015E


def noise_key(step_rng: Array) -> Array:
    """The key of the noise drawn in the train step whose key is `step_rng`."""
    return jax.random.fold_in(step_rng, _NOISE_STREAM)


def replaceable_ids(vocab_size: int, special_tokens: SpecialTokens) -> np.ndarray:
    """int32 [vocab_size - specials]: the ids a noisy input may read (every non-special id)."""
    special = {special_tokens.pad, special_tokens.bos, special_tokens.eos, special_tokens.unk}
    ids = np.array([i for i in range(vocab_size) if i not in special], np.int32)
    if ids.size == 0:
        raise ValueError(f"a vocabulary of {vocab_size} ids has no non-special token to draw")
    return ids


def noisy_inputs(
    inputs: Array,
    key: Array,
    rate: float,
    vocab_size: int,
    special_tokens: SpecialTokens,
    positions: Array | None = None,
) -> tuple[Array, Array]:
    """Teacher-forced decoder inputs with random replacements.

    Args:
      inputs: int [batch, tgt_len], e.g. `decoder_inputs(tgt_tokens, bos)`.
      rate: the probability that a replaceable input is replaced.
      positions: packed rows' decoder positions [batch, tgt_len] (0 at each example's BOS); None:
        position t is column t.
    Returns:
      (noisy inputs int32 [batch, tgt_len], bool [batch, tgt_len]: True where replaced). An input
      is replaceable unless it is padding or at position 0; a replacement may draw the very token
      it replaces.
    """
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
    real = special_tokens.real_decoder_inputs(inputs, positions) & (positions != 0)
    ids = jnp.asarray(replaceable_ids(vocab_size, special_tokens))
    draw_key, token_key = jax.random.split(key)
    replaced = jax.random.bernoulli(draw_key, rate, inputs.shape) & real
    random_tokens = ids[jax.random.randint(token_key, inputs.shape, 0, ids.shape[0])]
    return jnp.where(replaced, random_tokens, inputs).astype(jnp.int32), replaced


def check_config(config: ml_collections.ConfigDict) -> None:
    """`config.teacher_forcing.input_noise`: a rate in [0, 1), and only with full teacher forcing
    (the noise is a control beside scheduled sampling, not a part of it)."""
    config_checks.fraction(config, "teacher_forcing.input_noise", note=" (0: off)")
    tf = config.teacher_forcing
    if tf.input_noise > 0 and not always_gold(tf):
        raise ConfigError(
            f"config.teacher_forcing.input_noise={tf.input_noise}: decoder-input noise trains "
            "with full teacher forcing (schedule='constant', p=1.0, position_schedule='none'), "
            f"not with scheduled sampling (schedule={tf.schedule!r}, p={tf.p}, "
            f"position_schedule={tf.position_schedule!r})"
        )
