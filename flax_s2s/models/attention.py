"""Attention as the Transformer and T5 compute it: the choice between XLA's attention and cuDNN's
fused (flash) kernel, masks in the form a fused kernel takes, beam attention over a cache kept in
place (and the beams' `origin` table it reads), and the KV cache's creation and writes.

Masks are given as key lengths ([batch] int32; keys at positions >= length are masked) and a
causal flag, never as a [batch, heads, q_len, kv_len] boolean array; `attention_implementation`
picks the kernel in one place, and both kernels read the same lengths and flag, so the CPU path
computes what the GPU path does. Packed rows are the one exception: a boolean
[batch, 1, q_len, kv_len] mask from their segment ids (`segment_mask`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import backend as jax_backend

Array = jax.Array
KeyValue = dict[str, Array]  # {"key", "value"}: [batch, length, heads, head_dim]

# The allowed `attention` values: "auto" picks cuDNN's fused kernel where it runs (see
# `attention_implementation`), "xla" always XLA's attention, "cudnn" the fused kernel (jax raises
# where it cannot run it: not a CUDA GPU, float32, an unsupported head size). A decoding step
# (one query) always runs XLA's.
ATTENTIONS = ("auto", "xla", "cudnn")


_FUSED_DTYPES = (jnp.bfloat16, jnp.float16)  # what cuDNN's fused attention computes in


def _on_cuda() -> bool:
    """Whether the default backend is a CUDA GPU (not ROCm, whose GPUs have no cuDNN)."""
    backend = jax_backend.get_backend()
    return backend.platform == "gpu" and "cuda" in backend.platform_version.lower()


def attention_implementation(
    choice: str, dtype: Any, head_dim: int, query_length: int, on_cuda: bool | None = None
) -> str:
    """The `implementation` of `jax.nn.dot_product_attention` for one attention call: the one
    place where the choice is made, at trace time, from the config's `attention` value.

    "auto" is "cudnn" on a CUDA GPU (`on_cuda`, default: the default backend's) for a bfloat16
    or float16 compute dtype and a head size cuDNN's flash attention takes on every GPU it runs
    on (a multiple of 8, at most 128), else "xla". A query of length 1 (one cached decoding
    step) is always "xla": it is a matrix-vector product over the cache, bound by memory
    traffic, which a tiled flash kernel does not speed up, and it keeps decoding off the
    fused kernel's edge cases.
    """
    if query_length == 1:
        return "xla"
    if choice != "auto":
        return choice
    fused = (jnp.dtype(dtype) in _FUSED_DTYPES and head_dim % 8 == 0 and head_dim <= 128
             and (_on_cuda() if on_cuda is None else on_cuda))
    return "cudnn" if fused else "xla"


def key_lengths(mask: Array) -> Array:
    """Padding masks [batch, length] (True: real) -> key lengths [batch] int32, at least 1.

    The masks must be right-padded (real tokens first), as the data pipeline makes them. A row
    with no real token gets length 1 instead of 0, so it attends to its first (padding) key:
    with no key at all the fused kernel's output is not defined, and such rows (the padding rows
    of the last eval batch) have weight 0 but must stay finite.
    """
    return jnp.maximum(mask.sum(-1, dtype=jnp.int32), 1)


def attention_mask(q_len: int, kv_len: int, kv_lengths: Array | None, causal: bool) -> Array:
    """The boolean mask that `kv_lengths` and `causal` stand for, broadcastable to
    [batch, heads, q_len, kv_len] (True: may attend): for the attention plots."""
    mask = jnp.ones((1, 1, q_len, kv_len), bool)
    if causal:
        mask = mask & jnp.tril(jnp.ones((q_len, kv_len), bool))
    if kv_lengths is not None:
        mask = mask & (jnp.arange(kv_len) < kv_lengths[:, None, None, None])
    return mask


def segment_mask(query_segments: Array, key_segments: Array, causal: bool = False) -> Array:
    """The attention mask of packed rows, bool [batch, 1, q_len, kv_len] (True: may attend),
    from segment ids [batch, q_len] and [batch, kv_len] (0: padding, 1.. the example's index
    in the row): a query sees only keys of its own segment, and with `causal` only those at or
    before its position. A padding query (segment 0) sees every key (causally): it counts
    nowhere, but every row of the softmax keeps a key, so it stays finite."""
    same = query_segments[:, :, None] == key_segments[:, None, :]
    mask = same | (query_segments == 0)[:, :, None]
    if causal:
        mask = mask & jnp.tril(jnp.ones((query_segments.shape[1], key_segments.shape[1]), bool))
    return mask[:, None]


def attend(
    query: Array,
    key: Array,
    value: Array,
    kv_lengths: Array | None = None,
    causal: bool = False,
    implementation: str = "xla",
    mask: Array | None = None,
) -> Array:
    """Scaled dot-product attention, query [batch, q_len, heads, head_dim] over key and value
    [batch, kv_len, heads, head_dim] -> [batch, q_len, heads, head_dim]. Keys at positions
    >= kv_lengths [batch] are masked; `causal` masks keys after the query's position (q_len ==
    kv_len); `mask` (packed rows, `segment_mask`) bool [batch, 1, q_len, kv_len] masks where it
    is False. `implementation`: "xla" or "cudnn" (see `attention_implementation`)."""
    return jax.nn.dot_product_attention(
        query, key, value, mask=mask, is_causal=causal, key_value_seq_lengths=kv_lengths,
        implementation=implementation,
    )


def attend_beams(
    query: Array,
    key: Array,
    value: Array,
    origin: Array,
    filled: Array,
    bias: Array | None = None,
    scaled: bool = True,
) -> Array:
    """One decoding step's self-attention for beams whose caches stay where they were written.

    query [groups * beams, 1, heads, head_dim]; key, value [groups * beams, max_len, heads,
    head_dim] (a heads-major cache's `cache_view`), where row g * beams + s holds what slot s of
    input g wrote at each position;
    origin [groups, beams, max_len] int32: the slot whose row holds, at each position, the key and
    value of the beam now in slot b (`reorder_beam_cache` keeps it). Positions >= filled (a
    scalar) are masked. `bias` [1, heads, 1, max_len] (T5's relative positions), the same for
    every row, is added to the float32 logits; `scaled` divides them by sqrt(head_dim) (T5 does
    not). -> [groups * beams, 1, heads, head_dim].

    Each query scores against every slot of its input (beams x the keys) and keeps, per position,
    only the slot `origin` names, so the result equals attention over a cache gathered by beam,
    without the gather: beam search no longer copies the whole cache at every step.
    """
    groups, beams, length = origin.shape
    heads, head_dim = query.shape[-2:]
    # Keys and values exactly as the cache stores them, [rows, heads, len, head_dim] (the
    # transposes cancel `cache_view`'s; reshaped here, XLA would write each step's keys into the
    # cache once per shape and copy the whole cache for it). Row g * beams + s gets all of input
    # g's queries, so that rows and heads are the batch of both matmuls.
    key, value = (x.transpose(0, 2, 1, 3) for x in (key, value))
    query = query.reshape(groups, 1, beams, heads, head_dim).transpose(0, 1, 3, 2, 4)
    query = jnp.broadcast_to(query, (groups, beams, heads, beams, head_dim))
    query = query.reshape(groups * beams, heads, beams, head_dim)  # [rows, h, query, d]
    batch_dims = ((0, 1), (0, 1))
    scores = jax.lax.dot_general(query, key, (((3,), (3,)), batch_dims),
                                 preferred_element_type=jnp.float32)  # [rows, h, query, len]
    scores = scores.reshape(groups, beams, heads, beams, length)  # [g, slot, h, query, len]
    scores = scores / np.sqrt(head_dim) if scaled else scores
    if bias is not None:  # [1, heads, 1, max_len] -> [1, 1 (slot), heads, 1 (query), max_len]
        scores = scores + bias[:, None]
    own = origin[:, None, None] == jnp.arange(beams)[None, :, None, None, None]
    mask = own & (jnp.arange(length) < filled)  # [groups, slot, 1, query, len]
    weights = jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=(1, 4))
    weights = weights.reshape(groups * beams, heads, beams, length).astype(value.dtype)
    out = jax.lax.dot_general(weights, value, (((3,), (2,)), batch_dims),
                              preferred_element_type=jnp.float32)  # [rows, h, query, d]
    out = out.reshape(groups, beams, heads, beams, head_dim).sum(1)  # [g, h, query, d]
    return out.transpose(0, 2, 1, 3).reshape(groups * beams, 1, heads, head_dim).astype(query.dtype)


def beam_cache(cache: dict[str, Any], beam_size: int) -> dict[str, Any]:
    """A decoder's `init_cache` result for beam search over rows g * beam_size + slot, plus the
    table `origin` [groups, beam_size, max_len] int32 that `reorder_beam_cache` updates instead
    of moving the caches (each slot starts as its own origin)."""
    batch, _, max_len, _ = cache["self"][0]["key"].shape
    slots = jnp.arange(beam_size, dtype=jnp.int32)[None, :, None]
    return {**cache, "origin": jnp.broadcast_to(slots, (batch // beam_size, beam_size, max_len))}


def reorder_beam_cache(cache: dict[str, Any], rows: Array) -> dict[str, Any]:
    """The cache of beams whose new row r continues old row rows[r] (rows [groups * beams],
    within each input's beams). A beam cache (with `origin`) keeps every key and value where
    it was written and gathers only the small table; any other cache is gathered by row."""
    if "origin" not in cache:
        return jax.tree.map(lambda leaf: leaf[rows], cache)
    origin = cache["origin"]
    groups, beams, _ = origin.shape
    parents = (rows % beams).reshape(groups, beams)  # the slot each new beam continues
    origin = jnp.take_along_axis(origin, parents[:, :, None], axis=1)
    return {**cache, "origin": origin}


def step_origin(origin: Array | None, position: Array | int) -> Array | None:
    """The `origin` table a step at `position` reads: this step's keys and values go to each
    slot's own row. None (a cache without the table) stays None."""
    if origin is None:
        return None
    slots = jnp.broadcast_to(jnp.arange(origin.shape[1], dtype=origin.dtype), origin.shape[:2])
    return jax.lax.dynamic_update_slice_in_dim(origin, slots[:, :, None], position, 2)


def write_cache(cache: KeyValue, kv: KeyValue, position: Array | int) -> KeyValue:
    """One step's keys and values kv [batch, 1, heads, head_dim] written into a self-attention
    cache, heads-major [batch, heads, max_len, head_dim], at `position`."""
    return jax.tree.map(
        lambda cached, new: jax.lax.dynamic_update_slice_in_dim(
            cached, new.transpose(0, 2, 1, 3), position, 2),
        cache, kv,
    )


def cache_view(cache: KeyValue) -> KeyValue:
    """A heads-major cache [batch, heads, max_len, head_dim] as the keys and values [batch,
    max_len, heads, head_dim] that attention reads. The cache is stored heads-major because
    attention's batched matmuls take batch and heads outermost: XLA folds this transpose into
    them, where a [batch, max_len, heads, head_dim] cache is copied whole at every step."""
    return jax.tree.map(lambda x: x.transpose(0, 2, 1, 3), cache)


def empty_caches(
    max_len: int, num_heads: int, head_dim: int, dtype: Any, cross: list[KeyValue]
) -> dict[str, list[KeyValue]]:
    """`init_cache`'s result for a decoder whose layers attend over the source's keys and values
    `cross` ([batch, src_len, heads, head_dim] per layer, `encode`'s): "self", for each layer
    zero keys and values heads-major, [batch, num_heads, max_len, head_dim], of `dtype` (see
    `cache_view`); "cross", the source's keys and values heads-major, [batch, heads, src_len,
    head_dim], which a step reads through `cache_view` as it reads "self".

    Why the source's keys and values are copied here, once: a step's attention over them wants
    them heads-major, and XLA lays out its operands after hoisting what does not change out of
    the loop, so read from `encode`'s layout every step of a decoding loop transposed all of them
    (at beam 4 over 64 inputs of a 6-layer model, 12 copies of 16 MB a step)."""
    batch = cross[0]["key"].shape[0]
    shape = (batch, num_heads, max_len, head_dim)
    empty = {"key": jnp.zeros(shape, dtype), "value": jnp.zeros(shape, dtype)}
    # The barrier keeps the copy: without it XLA cancels this transpose against the step's
    # `cache_view` and the per-step transposes come back into the loop.
    heads_major = jax.lax.optimization_barrier(
        [jax.tree.map(lambda x: x.transpose(0, 2, 1, 3), kv) for kv in cross])
    return {"self": [empty for _ in cross], "cross": heads_major}
