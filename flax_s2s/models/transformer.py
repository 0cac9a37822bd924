"""Encoder-decoder Transformer (Vaswani et al. 2017) with an explicit KV cache for decoding.

Encoder: token embeddings + positions -> layers of [self-attention, MLP], each a residual sublayer
with its norm before ("pre") or after ("post") the residual sum (see `norms.py`).
Decoder: the same with [causal self-attention, cross-attention over the encoder memory, MLP].

The module exposes the decoder step-function seam (`encode`, `init_cache`, `step`, `forward`):
- `forward` is the parallel teacher-forced pass, with a causal mask;
- `step` decodes one position: it projects the new token's key and value, writes them into the
  cache at `position`, and attends over positions <= `position`, so a token costs O(length).
The cache is a plain pytree passed in and returned (no mutable linen collection), so `step` is a
pure function of its inputs and beam search can reorder it with one tree_map. `encode` also
projects the encoder memory into each layer's cross-attention keys and values, once per input:
they belong to the input, not to a hypothesis. `forward` reads them from `encoded`; `init_cache`
copies them once, heads-major, into the cache that `step` reads (see `empty_caches`: read from
`encoded`, every step of a decoding loop transposed them). Beam search never moves them: it
follows its beams through the `origin` table.

`dtype` is the compute dtype (e.g. bfloat16); parameters stay float32, attention logits and
softmax and norm statistics are computed in float32, and logits are returned in float32.

Attention masks are given in the form a fused kernel takes: key lengths ([batch] int32; keys at
positions >= length are masked) and a causal flag, never as a [batch, heads, q_len, kv_len]
boolean array. `attention_implementation` picks, in one place, between XLA's attention and
cuDNN's fused (flash) attention, which runs on CUDA GPUs in bfloat16 or float16; both read the
same lengths and flag, so the CPU path computes what the GPU path does.

Packed rows (several examples a row, `flax_s2s.data.packing`) are the one exception: `encode` and
`forward` then take each side's segment ids and per-example positions, and every attention is
masked by a boolean [batch, 1, q_len, kv_len] mask from the segment ids (`segment_mask`: a query
sees only the keys of its own example), while the position embeddings read the per-example
positions. Without segment ids nothing of this is traced.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from flax_s2s.models.attention import (
    ATTENTIONS,
    KeyValue,
    beam_cache,
    cache_view,
    empty_caches,
    reorder_beam_cache,
    segment_mask,
    step_origin,
)
from flax_s2s.models.dense import DENSE, float32_accumulation
from flax_s2s.models.norms import make_norm
from flax_s2s.models.remat import layer_class
from flax_s2s.models.transformer_layers import (
    POSITIONS,
    DecoderLayer,
    EncoderLayer,
    Positions,
    TransformerConfig,
)
from flax_s2s.special_tokens import SpecialTokens

Array = jax.Array
__all__ = ["ATTENTIONS", "POSITIONS", "Transformer", "TransformerConfig", "check_packed_encoding",
           "encoder_output", "source_mask"]


def source_mask(src_tokens: Array, pad: int, segment_ids: Array | None) -> Array:
    """The real source tokens, bool [batch, src_len]: not `pad`, or for packed rows those of
    some example (segment id > 0)."""
    return segment_ids > 0 if segment_ids is not None else src_tokens != pad


def encoder_output(
    memory: Array, src_mask: Array, decoder_layers: list[Any], segment_ids: Array | None
) -> dict[str, Any]:
    """`encode`'s result: memory [batch, src_len, d_model], src_mask [batch, src_len], "cross":
    each decoder layer's cross-attention keys and values (its `cross_kv`), and for packed rows
    the source segment ids [batch, src_len] ("src_segment_ids", which `forward` reads)."""
    cross = [layer.cross_kv(memory) for layer in decoder_layers]
    encoded = {"memory": memory, "src_mask": src_mask, "cross": cross}
    if segment_ids is not None:
        encoded["src_segment_ids"] = segment_ids
    return encoded


def tied_logits(embed: nn.Embed, x: Array) -> Array:
    """`embed.attend(x)`: x [..., d_model] -> logits [..., vocab] through the embedding table,
    accumulated in float32 (`float32_accumulation`).

    One row (a batch-1 decoding step) is computed as the matrix-vector product table @ x: the
    same numbers, but written as x @ table.T, XLA:CPU reduces it to a vector-matrix product that
    it fuses with a following bias add by transposing the whole table first, at every step
    (20 ms for a 16k x 512 table, against 1.4 ms for the product itself)."""
    query, table = promote_dtype(x, embed.embedding, dtype=embed.dtype)
    if math.prod(x.shape[:-1]) != 1:
        return float32_accumulation(query, table, (((query.ndim - 1,), (1,)), ((), ())))
    logits = float32_accumulation(table, query.reshape(-1), (((1,), (0,)), ((), ())))
    return logits.reshape(*x.shape[:-1], table.shape[0])


def check_packed_encoding(encoded: dict[str, Any], encode_reads: str) -> None:
    """Fails, saying what the packed `encode` call takes (`encode_reads`), unless `encoded`
    comes from one: packed decoder inputs attend only to their own example's source."""
    if "src_segment_ids" not in encoded:
        raise ValueError("packed decoder inputs need a packed encoding: call encode "
                         f"with the sources' {encode_reads}")


class Transformer(nn.Module):
    """Encoder-decoder Transformer behind the step-function seam (see the module docstring)."""

    config: TransformerConfig
    TAKES_PACKED_ROWS = True  # encode / forward take segment ids and positions

    @property
    def tgt_vocab_size(self) -> int:
        """The size of the output distribution, as the RNN module has it (ensembles check it)."""
        return self.config.tgt_vocab_size

    @property
    def special_tokens(self) -> SpecialTokens:
        """The vocabulary's special ids, as the RNN module has them."""
        return self.config.special_tokens

    def setup(self) -> None:
        c = self.config
        # Unit-variance embeddings, as in Flax's examples/wmt; tied logits are rescaled below.
        embed_init = nn.initializers.normal(1.0)
        self.src_embed = nn.Embed(c.src_vocab_size, c.d_model, c.dtype, embedding_init=embed_init)
        self.tgt_embed = (
            self.src_embed
            if c.share_embeddings
            else nn.Embed(c.tgt_vocab_size, c.d_model, c.dtype, embedding_init=embed_init)
        )
        self.positions = Positions(c)
        # BART: the decoder's own table (the encoder's is `positions`), a norm after each embedding
        own_table = c.positions_per_stack and c.positions == "learned"
        self.decoder_positions = Positions(c) if own_table else self.positions
        if c.embedding_norm:
            self.encoder_embedding_norm = make_norm(c.norm, c.dtype, epsilon=c.norm_epsilon)
            self.decoder_embedding_norm = make_norm(c.norm, c.dtype, epsilon=c.norm_epsilon)
        self.encoder_layers = [layer_class(EncoderLayer, c)(c) for _ in range(c.num_encoder_layers)]
        self.decoder_layers = [layer_class(DecoderLayer, c)(c) for _ in range(c.num_decoder_layers)]
        # Pre-norm leaves the residual stream unnormalised; one final norm closes each stack.
        final_kind = c.norm if c.norm_position == "pre" else "none"
        self.encoder_norm = make_norm(final_kind, c.dtype, epsilon=c.norm_epsilon)
        self.decoder_norm = make_norm(final_kind, c.dtype, epsilon=c.norm_epsilon)
        self.dropout = nn.Dropout(c.dropout_rate)
        if not c.tie_output:
            self.output_proj = nn.Dense(c.tgt_vocab_size, dtype=c.dtype, **DENSE)
        elif c.output_bias:
            self.output_bias = self.param(
                "output_bias", nn.initializers.zeros, (c.tgt_vocab_size,), jnp.float32
            )

    def _check_length(self, length: int) -> None:
        c = self.config
        bounded = c.positions == "learned" or c.sinusoidal_layout == "marian"  # a table
        if bounded and length > c.max_positions:
            raise ValueError(
                f"length {length} exceeds the {c.max_positions} positions of the table "
                "(max(max_src_len, max_tgt_len) of the training config)"
            )

    def encode(
        self,
        src_tokens: Array,
        train: bool = False,
        segment_ids: Array | None = None,
        positions: Array | None = None,
    ) -> dict[str, Any]:
        """src_tokens [batch, src_len] -> memory [batch, src_len, d_model], src_mask
        [batch, src_len] and, per decoder layer, the cross-attention keys and values
        [batch, src_len, decoder heads, head_dim].

        Packed rows: `segment_ids` and `positions` [batch, src_len] int32 (see
        `flax_s2s.data.packing`); each example attends only to itself and reads its own
        positions, and the segment ids go into the result ("src_segment_ids") for `forward`'s
        cross-attention."""
        self._check_length(src_tokens.shape[1])
        packed = segment_ids is not None
        src_mask = source_mask(src_tokens, self.special_tokens.pad, segment_ids)
        where = positions if packed else jnp.arange(src_tokens.shape[1])
        self_mask = segment_mask(segment_ids, segment_ids) if packed else None
        x = self._embed(self.src_embed, self.positions, src_tokens, where)
        if self.config.embedding_norm:
            x = self.encoder_embedding_norm(x, src_mask, train)
        x = self.dropout(x, deterministic=not train)
        for layer in self.encoder_layers:
            x = layer(x, src_mask, train, self_mask)
        memory = self.encoder_norm(x, src_mask, train)
        return encoder_output(memory, src_mask, self.decoder_layers, segment_ids)

    def init_cache(self, encoded: dict[str, Any], max_len: int) -> dict[str, list[KeyValue]]:
        """Empty self-attention caches for `max_len` positions, one per decoder layer, and the
        cross-attention keys and values laid out for a decoding loop (`empty_caches`)."""
        self._check_length(max_len)
        c = self.config
        return empty_caches(max_len, c.decoder_heads, c.d_model // c.decoder_heads, c.dtype,
                            encoded["cross"])

    def init_beam_cache(
        self, encoded: dict[str, Any], max_len: int, beam_size: int
    ) -> dict[str, Any]:
        """`init_cache` for beam search over encoded rows g * beam_size + slot, plus the table
        `origin` that `reorder_cache` updates instead of moving the caches (`beam_cache`)."""
        return beam_cache(self.init_cache(encoded, max_len), beam_size)

    reorder_cache = staticmethod(reorder_beam_cache)  # gathers only `origin` (see there)

    def _embed(self, embed: nn.Embed, positions: Positions, tokens: Array, where: Array) -> Array:
        """Token embeddings (scaled by sqrt(d_model) with `scale_embeddings`) plus positions:
        tokens [batch, length] at positions `where` [length] (or [batch, length], packed rows)
        -> [batch, length, d_model]."""
        x = embed(tokens)
        if self.config.scale_embeddings:
            x = x * jnp.sqrt(self.config.d_model).astype(x.dtype)
        return x + positions(where)

    def _decoder_inputs(self, tokens: Array, where: Array, tgt_mask: Array, train: bool) -> Array:
        """The decoder's first hidden states for tokens [batch, length] at positions `where`."""
        x = self._embed(self.tgt_embed, self.decoder_positions, tokens, where)
        if self.config.embedding_norm:
            x = self.decoder_embedding_norm(x, tgt_mask, train)
        return self.dropout(x, deterministic=not train)

    def _logits(self, x: Array, tgt_mask: Array, train: bool) -> Array:
        c = self.config
        x = self.decoder_norm(x, tgt_mask, train)
        x = self.dropout(x, deterministic=not train)
        if not c.tie_output:
            return self.output_proj(x).astype(jnp.float32)
        logits = tied_logits(self.tgt_embed, x)
        if c.rescale_tied_output:
            # Unit-variance embeddings give logits of variance d_model; rescale (examples/wmt).
            logits = logits / jnp.sqrt(x.shape[-1]).astype(x.dtype)
        logits = logits.astype(jnp.float32)
        return logits + self.output_bias if c.output_bias else logits

    def forward(
        self,
        encoded: dict[str, Any],
        tgt_inputs: Array,
        train: bool = False,
        segment_ids: Array | None = None,
        positions: Array | None = None,
    ) -> Array:
        """Teacher-forced logits [batch, tgt_len, tgt_vocab] for decoder inputs [batch, tgt_len].

        Packed rows: the targets' `segment_ids` and `positions` [batch, tgt_len] (the inputs
        shifted right per example, `flax_s2s.models.decoder_inputs`); `encoded` must come from
        a packed `encode`. Each example's positions attend causally within it and to its own
        source only."""
        self._check_length(tgt_inputs.shape[1])
        masks = {}
        if segment_ids is None:
            where = jnp.arange(tgt_inputs.shape[1])
            tgt_mask = self.special_tokens.real_decoder_inputs(tgt_inputs, where)
        else:
            check_packed_encoding(encoded, "segment ids and positions")
            where, tgt_mask = positions, segment_ids > 0
            masks = {"self_mask": segment_mask(segment_ids, segment_ids, causal=True),
                     "cross_mask": segment_mask(segment_ids, encoded["src_segment_ids"])}
        x = self._decoder_inputs(tgt_inputs, where, tgt_mask, train)
        for layer, cross_kv in zip(self.decoder_layers, encoded["cross"], strict=True):
            x, _ = layer(x, tgt_mask, cross_kv, encoded["src_mask"], train, **masks)
        return self._logits(x, tgt_mask, train)

    def step(
        self,
        encoded: dict[str, Any],
        cache: dict[str, Any],
        prev_tokens: Array,
        position: Array | int,
        train: bool = False,
    ) -> tuple[Array, dict[str, Any]]:
        """prev_tokens [batch] at `position` -> (logits [batch, tgt_vocab], updated cache).
        `cache` is `init_cache`'s ({"self": per-layer keys and values, "cross": the source's})
        or `init_beam_cache`'s (the same plus the beams' `origin` table)."""
        if train and self.config.norm == "batch":
            raise ValueError(
                "model.norm='batch' trains on the parallel teacher-forced path only: step-by-step "
                "training has no batch x time statistics (see flax_s2s/models/norms.py)"
            )
        tgt_mask = self.special_tokens.real_decoder_inputs(prev_tokens, position)[:, None]
        x = self._decoder_inputs(prev_tokens[:, None], jnp.asarray(position)[None], tgt_mask, train)
        origin = step_origin(cache.get("origin"), position)
        self_caches = []
        for layer, self_cache, cross_kv in zip(
            self.decoder_layers, cache["self"], cache["cross"], strict=True
        ):
            x, self_cache = layer(x, tgt_mask, cache_view(cross_kv), encoded["src_mask"], train,
                                  self_cache, position, origin)
            self_caches.append(self_cache)
        logits = self._logits(x, tgt_mask, train)[:, 0]
        new_cache = {"self": self_caches, "cross": cache["cross"]}
        if origin is not None:
            new_cache["origin"] = origin
        return logits, new_cache

    def __call__(self, src_tokens: Array, tgt_inputs: Array, train: bool = False) -> Array:
        """Creates every parameter (used by `init`): the teacher-forced logits."""
        return self.forward(self.encode(src_tokens, train), tgt_inputs, train)
