"""Exposure-bias diagnostics over the model seam: does a decoder recover from one wrong token in
its prefix?

Recovery (`recovery_counts`): on the gold prefix, the target token y_k is replaced, where the
decoder reads it, by the model's most likely wrong token there (`corruption="wrong"`) or by a
uniformly random other non-special token (`"random"`); the rest stays teacher-forced. The
predictions of y_{k+d}, d = 1, 2, ..., are scored against the gold tokens, beside the same
predictions from the clean prefix. A model that recovers at once has the clean accuracy at every
distance; one that never does stays below it.

Error after error (`error_after_error`): in free-running output aligned to its reference by edit
distance (`reference_errors`), the error rate at reference positions that follow an earlier
error, against those that follow none. Errors that cause later errors raise the first rate above
the second; independent errors leave them equal.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
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
    positions: Sequence[int],
    corruption: str = "wrong",
    key: Array | None = None,
    batch_size: int = 0,
) -> dict[str, np.ndarray]:
    """`recovery_counts` summed over the replaced positions k in `positions` (one compile for
    all, and for later calls with the same model, corruption and shapes; "random" draws with
    fold_in(key, k)), as accuracies by distance d.

    `batch_size` > 0 runs the rows in batches of that static shape (one compile for all: the last
    batch is filled with copies of its last source and all-pad targets, which count nothing; a
    batch's random draws use fold_in(fold_in(key, k), batch index)); 0 runs them in one batch.

    Returns:
      float64 [tgt_len] each: "tokens" (targets counted at distance d), "clean" and "corrupted"
      (their accuracy from the clean and the corrupted prefix; nan where nothing is counted).
    """
    src_tokens, tgt_tokens = np.asarray(src_tokens), np.asarray(tgt_tokens)
    size = batch_size or len(src_tokens)
    total = {"tokens": 0.0, "clean": 0.0, "corrupted": 0.0}
    for index, start in enumerate(range(0, len(src_tokens), size)):
        src = src_tokens[start : start + size]
        tgt = tgt_tokens[start : start + size]
        missing = size - len(src)
        src = np.pad(src, ((0, missing), (0, 0)), mode="edge")
        tgt = np.pad(tgt, ((0, missing), (0, 0)), constant_values=model.special_tokens.pad)
        for position in positions:
            position_key = None
            if key is not None:
                position_key = jax.random.fold_in(key, position)
                if batch_size:
                    position_key = jax.random.fold_in(position_key, index)
            got = _compiled_counts(model, variables, src, tgt, jnp.asarray(position, jnp.int32),
                                   corruption, position_key)
            total = {name: total[name] + np.asarray(got[name], np.float64) for name in total}
    tokens = total["tokens"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"tokens": tokens,
                "clean": np.where(tokens > 0, total["clean"] / tokens, np.nan),
                "corrupted": np.where(tokens > 0, total["corrupted"] / tokens, np.nan)}


# jitted once per (model, corruption): the model is hashable (`flax_s2s.models.Seq2Seq`)
_compiled_counts = jax.jit(recovery_counts, static_argnames=("model", "corruption"))


def reference_errors(prediction: Sequence[Hashable], reference: Sequence[Hashable]) -> list[bool]:
    """Whether each reference position is wrong in `prediction`, by an edit-distance alignment.

    The alignment: the Levenshtein table of unit-cost substitutions, deletions (a reference token
    the prediction lacks) and insertions (a predicted token the reference lacks), traced back from
    the end preferring, on ties, a match or substitution, then a deletion, then an insertion. A
    reference position is an error when its token is substituted or deleted, or when predicted
    tokens are inserted before it (since the previous reference token); insertions after the last
    reference token count at the last position. Positions: len(reference) of them (an empty
    reference has none, so its prediction counts nothing). Tokens: any comparable values (ids,
    symbols), without EOS or padding.
    """
    m, n = len(prediction), len(reference)
    table = [[i + j if i == 0 or j == 0 else 0 for j in range(n + 1)] for i in range(m + 1)]
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            table[i][j] = min(table[i - 1][j - 1] + (prediction[i - 1] != reference[j - 1]),
                              table[i][j - 1] + 1, table[i - 1][j] + 1)
    errors = [False] * n
    i, j = m, n
    while i or j:
        mismatch = i and j and prediction[i - 1] != reference[j - 1]
        if i and j and table[i][j] == table[i - 1][j - 1] + mismatch:  # match / substitution
            errors[j - 1] = errors[j - 1] or bool(mismatch)
            i, j = i - 1, j - 1
        elif j and table[i][j] == table[i][j - 1] + 1:  # deletion of reference[j - 1]
            errors[j - 1] = True
            j -= 1
        else:  # insertion of prediction[i - 1], before reference position j
            if n:
                errors[min(j, n - 1)] = True
            i -= 1
    return errors


def error_after_error(
    predictions: Sequence[Sequence[int]], references: Sequence[Sequence[int]]
) -> dict:
    """The error rate at reference positions after an earlier error against after none.

    Each prediction is aligned to its reference (`reference_errors`: a position is an error when
    its token is substituted or deleted or follows inserted tokens). A position is "after error"
    when an earlier position of the same reference is an error, else "after clean" (position 0
    always is). Free-running errors that cause later ones make rate_after_error exceed
    rate_after_clean; independent errors leave the two equal up to sampling error. Later positions
    are more often after an error, so a rate that grows along the output also raises it: the
    rates by distance show whether the excess fades with distance from the error.

    Returns:
      "errors_after_error", "positions_after_error", "errors_after_clean",
      "positions_after_clean" (ints), "rate_after_error", "rate_after_clean" (errors / positions,
      nan without positions), and "by_distance": lists indexed by d - 1, d = 1, 2, ... the
      distance from the most recent earlier error: "distance", "errors", "positions", "rate".
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    counts = {"errors_after_error": 0, "positions_after_error": 0,
              "errors_after_clean": 0, "positions_after_clean": 0}
    errors_at: list[int] = []
    positions_at: list[int] = []
    for prediction, reference in zip(predictions, references, strict=True):
        last_error = None
        for position, wrong in enumerate(reference_errors(prediction, reference)):
            after = "clean" if last_error is None else "error"
            counts[f"positions_after_{after}"] += 1
            counts[f"errors_after_{after}"] += wrong
            if last_error is not None:
                distance = position - last_error
                if distance > len(positions_at):
                    errors_at += [0] * (distance - len(errors_at))
                    positions_at += [0] * (distance - len(positions_at))
                positions_at[distance - 1] += 1
                errors_at[distance - 1] += wrong
            if wrong:
                last_error = position
    return {
        **counts,
        "rate_after_error": _rate(counts["errors_after_error"], counts["positions_after_error"]),
        "rate_after_clean": _rate(counts["errors_after_clean"], counts["positions_after_clean"]),
        "by_distance": {"distance": list(range(1, len(positions_at) + 1)), "errors": errors_at,
                        "positions": positions_at,
                        "rate": [_rate(e, p) for e, p in zip(errors_at, positions_at, strict=True)]},
    }


def _rate(errors: int, positions: int) -> float:
    return errors / positions if positions else float("nan")


# The diagnostics record the evaluate command writes (`--diagnose`) and the report draws.
RECORD_FILE = "diagnostics.json"
RECORD_KIND = "flax_s2s exposure-bias diagnostics"
DIAGNOSES = ("recovery", "error_after_error")


def recovery_record(curve: dict[str, np.ndarray], max_distance: int) -> dict[str, list]:
    """A `recovery_curve` at distances d = 1 .. max_distance (fewer where the targets end), as
    JSON lists: "distance", "tokens", "clean", "corrupted", and "relative" = corrupted / clean
    (1 everywhere: recovery is immediate); None where nothing is counted."""
    last = min(max_distance, len(curve["tokens"]) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = curve["corrupted"] / curve["clean"]
    return {"distance": list(range(1, last + 1)),
            **{name: json_numbers(values[1 : last + 1])
               for name, values in (*curve.items(), ("relative", relative))}}


def json_numbers(values: Any) -> list:
    """Floats for JSON: nan and infinities as None."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, np.float64)]
