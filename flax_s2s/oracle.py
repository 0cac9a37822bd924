"""Oracle targets for sampled prefixes (`config.teacher_forcing.oracle_targets`): a dynamic
oracle for edit distance, for symbol-level tasks.

Under scheduled sampling the decoder's prefix holds its own tokens; after one that inserts or
deletes a symbol, the gold token at the same position is no longer the right next output. The
oracle aligns the prefix the decoder has read to the reference by edit distance and asks for the
reference token that follows the best-aligned reference prefix: at position t, with prefix
p = read[1..t] and reference r (its tokens up to and including EOS, n of them),

    j* = the largest j < n minimising edit(p, r[:j]),    target[t] = r[j*]

(ties go to the alignment that has consumed the most reference; optimal completion
distillation, Sabour et al. 2019, takes every tied r[j] as a target, uniformly: one target keeps
the token loss as it is, and the longest prefix is the one that moves the output on). Where the
prefix is gold, edit(p, r[:t]) = 0 and the target is the gold one. The rows of the edit-distance
table are computed in one `lax.scan` over the prefix, each row from the previous one in parallel
(the horizontal insertions by a cumulative minimum), on static shapes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from flax_s2s.errors import ConfigError
from flax_s2s.forcing import always_gold
from flax_s2s.sequence_costs import edit_row

Array = jax.Array


def _target(row: Array, reference: Array, lengths: Array) -> Array:
    """r[j*] [batch]: the reference token after the largest j < length minimising `row`."""
    length = reference.shape[1]
    masked = jnp.where(jnp.arange(length) < lengths[:, None], row, 4 * length + 1)
    best = length - 1 - jnp.argmin(masked[:, ::-1], axis=1)
    return jnp.take_along_axis(reference, best[:, None], axis=1)[:, 0]


def oracle_targets(read_tokens: Array, tgt_tokens: Array, pad: int) -> Array:
    """The dynamic oracle's targets for the prefixes the decoder read.

    Args:
      read_tokens: int [batch, tgt_len], what the decoder read at each position (position 0 its
        BOS, never part of a prefix), e.g. the read tokens of a scheduled-sampling unroll.
      tgt_tokens: int [batch, tgt_len], the references: tokens up to EOS, then `pad`. Unpacked
        rows only.
    Returns:
      int32 [batch, tgt_len]: at position t, the reference token after the reference prefix best
      aligned to read_tokens[:, 1:t + 1]. Positions past a reference's length (weight 0 in the
      loss) hold some reference token or pad.
    """
    reference = tgt_tokens.astype(jnp.int32)
    lengths = (reference != pad).sum(axis=1)
    first = jnp.broadcast_to(jnp.arange(reference.shape[1], dtype=jnp.int32), reference.shape)

    def body(row, prefix_token):  # row [batch, tgt_len]: distances to r[:j], j < tgt_len
        row = edit_row(row, prefix_token, reference[:, :-1])
        return row, _target(row, reference, lengths)

    _, later = jax.lax.scan(body, first, read_tokens[:, 1:].astype(jnp.int32).T)
    return jnp.concatenate([_target(first, reference, lengths)[:, None], later.T], axis=1)


def check_config(config: ml_collections.ConfigDict) -> None:
    """`config.teacher_forcing.oracle_targets`: a bool, with scheduled sampling (there is no
    sampled prefix otherwise) on unpacked rows."""
    tf = config.teacher_forcing
    if not isinstance(tf.oracle_targets, bool):
        raise ConfigError(f"config.teacher_forcing.oracle_targets={tf.oracle_targets!r}: must be "
                          "True or False")
    if not tf.oracle_targets:
        return
    if always_gold(tf):
        raise ConfigError(
            "config.teacher_forcing.oracle_targets=True needs scheduled sampling (a schedule "
            "with p < 1 somewhere): with full teacher forcing every prefix is gold and the "
            "oracle's targets are the gold ones"
        )
    if config.pack:
        raise ConfigError("config.teacher_forcing.oracle_targets=True aligns one reference a "
                          "row: it trains on unpacked rows (config.pack=False)")
