"""Exposure-bias diagnostics over the model seam: does a decoder recover from one wrong token in
its prefix?

Recovery (`recovery_counts`): on the gold prefix, the target token y_k is replaced, where the
decoder reads it, by the model's most likely wrong token there (`corruption="wrong"`) or by a
uniformly random other non-special token (`"random"`); the rest stays teacher-forced. The
predictions of y_{k+d}, d = 1, 2, ..., are scored against the gold tokens, beside the same
predictions from the clean prefix. A model that recovers at once has the clean accuracy at every
distance; one that never does stays below it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flax_s2s import decoding
from flax_s2s.input_noise import replaceable_ids
from flax_s2s.models import decoder_inputs

Array = jax.Array
CORRUPTIONS = ("wrong", "random")


def corrupted_token(
    model: Any, clean_logits: Array, tgt_tokens: Array, position: Array | int, corruption: str,
    key: Array | None = None,
) -> Array:
    """The token read in place of y_position, int32 [batch]: the argmax of the clean logits that
    predicted it, gold and never-emitted ids excluded ("wrong"), or a uniform draw from the
    non-special ids other than gold ("random", needs `key`). clean_logits [batch, tgt_len, vocab],
    tgt_tokens [batch, tgt_len]."""
    gold = tgt_tokens[:, position].astype(jnp.int32)
    if corruption == "wrong":
        log_probs = decoding.output_log_probs(clean_logits[:, position], model.special_tokens)
        log_probs = jnp.where(jax.nn.one_hot(gold, log_probs.shape[-1], dtype=bool), -jnp.inf,
                              log_probs)
        return jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
    if corruption == "random":
        if key is None:
            raise ValueError("corruption='random' needs a key")
        ids = jnp.asarray(replaceable_ids(clean_logits.shape[-1], model.special_tokens))
        draw = jax.random.randint(key, gold.shape, 0, ids.shape[0] - 1)
        skip = jnp.searchsorted(ids, gold)  # gold's index among ids: skipped
        return ids[draw + (draw >= skip)]
    raise ValueError(f"corruption must be one of {list(CORRUPTIONS)}, got {corruption!r}")


def recovery_counts(
    model: Any,
    variables: Any,
    src_tokens: Array,
    tgt_tokens: Array,
    position: Array | int,
    corruption: str = "wrong",
    key: Array | None = None,
) -> dict[str, Array]:
    """Correct predictions of y_{position + d} from the clean and the corrupted prefix.

    Args:
      src_tokens: [batch, src_len]; tgt_tokens: [batch, tgt_len], tokens up to EOS, then pad.
      position: k, the index of the target token replaced (may be traced: one compile serves
        every k). Rows whose y_k is EOS or padding count nothing.
    Returns:
      float32 [tgt_len] each, indexed by the distance d (d = 0 is always 0): "tokens" (real
      targets at distance d), "clean" and "corrupted" (those predicted right), and "replaced"
      int32 [batch], the token read in place of y_k.
    """
    encoded = model.encode(variables, src_tokens)
    pad = model.special_tokens.pad
    gold_inputs = decoder_inputs(tgt_tokens, model.special_tokens.bos)
    clean_logits = model.forward(variables, encoded, gold_inputs)
    replaced = corrupted_token(model, clean_logits, tgt_tokens, position, corruption, key)
    length = tgt_tokens.shape[1]
    columns = jnp.arange(length)
    # y_k is read at input position k + 1
    inputs = jnp.where(columns == position + 1, replaced[:, None], gold_inputs)
    corrupted_logits = model.forward(variables, encoded, inputs)
    lengths = (tgt_tokens != pad).sum(axis=1)
    usable = (position < lengths - 1)[:, None]  # y_k precedes the EOS
    weights = (usable & (tgt_tokens != pad) & (columns > position)).astype(jnp.float32)
    distance = jnp.clip(columns - position, 0, length - 1)

    def by_distance(logits: Array) -> Array:
        correct = (logits.argmax(-1) == tgt_tokens) * weights
        return jnp.zeros(length, jnp.float32).at[distance].add(correct.sum(0))

    return {
        "tokens": jnp.zeros(length, jnp.float32).at[distance].add(weights.sum(0)),
        "clean": by_distance(clean_logits),
        "corrupted": by_distance(corrupted_logits),
        "replaced": replaced,
    }


def recovery_curve(
    model: Any,
    variables: Any,
    src_tokens: Array,
    tgt_tokens: Array,
    positions: list[int],
    corruption: str = "wrong",
    key: Array | None = None,
) -> dict[str, np.ndarray]:
    """`recovery_counts` summed over the replaced positions k in `positions` (one compile for
    all; "random" draws with fold_in(key, k)), as accuracies by distance d.

    Returns:
      float64 [tgt_len] each: "tokens" (targets counted at distance d), "clean" and "corrupted"
      (their accuracy from the clean and the corrupted prefix; nan where nothing is counted).
    """
    counts = jax.jit(
        lambda variables, src, tgt, k, key: recovery_counts(
            model, variables, src, tgt, k, corruption, key)
    )
    total = {"tokens": 0.0, "clean": 0.0, "corrupted": 0.0}
    for position in positions:
        position_key = None if key is None else jax.random.fold_in(key, position)
        got = counts(variables, src_tokens, tgt_tokens, jnp.asarray(position, jnp.int32),
                     position_key)
        total = {name: total[name] + np.asarray(got[name], np.float64) for name in total}
    tokens = total["tokens"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"tokens": tokens,
                "clean": np.where(tokens > 0, total["clean"] / tokens, np.nan),
                "corrupted": np.where(tokens > 0, total["corrupted"] / tokens, np.nan)}
