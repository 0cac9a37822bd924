"""T5 (Raffel et al. 2020) behind the decoder step-function seam, laid out as the published
checkpoints are, so that `flax_s2s.pretrained.load_t5` can fill it from a `save_pretrained`
directory.

What sets it apart from `transformer.Transformer`:
- no position embeddings: each attention adds a learned bias per head and *bucket* of the
  relative position key - query (`relative_position_bucket`: exact buckets for short distances,
  logarithmic ones up to `relative_attention_max_distance`, one bucket beyond). The encoder's
  buckets are bidirectional, the decoder's causal; each stack's first layer owns the bias table
  and every layer of that stack adds the same bias. Cross-attention has none. In `step` the bias
  is the current query position's against every cached key position;
- attention logits are not divided by sqrt(d_kv) (T5 folds that scale into the query's init);
- RMS norm (no mean, no bias, float32 variance) before every sublayer and at the end of each
  stack; no dense layer has a bias;
- MLP: ReLU (v1.0) or gated GELU (v1.1, mT5, ByT5: gelu(x W_0) * (x W_1), GELU's tanh form);
- one embedding shared by encoder and decoder; the output either reuses it (v1.0, with the
  decoder output rescaled by d_model ** -0.5) or is its own `lm_head` (v1.1);
- the decoder starts from the pad token (`T5_SPECIAL_TOKENS`: pad 0 = bos, eos 1, unk 2).

The cache, `encoded` and the four seam functions are the Transformer's: `encode` also projects the
memory into each decoder layer's cross-attention keys and values; the cache holds the decoder's
self-attention keys and values ([batch, heads, max_len, d_kv] per layer) and a copy of the
source's laid out for the loop (`empty_caches`). Beam search
keeps it in place, as the Transformer's: `init_beam_cache` adds the table `origin` of which beam
wrote each position, `reorder_cache` gathers only that table, and a step's self-attention reads
the cache through it (`attend_beams`, with T5's bias and no logit scale).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flax_s2s.models.attention import (
    KeyValue,
    attend_beams,
    beam_cache,
    cache_view,
    empty_caches,
    reorder_beam_cache,
    segment_mask,
    step_origin,
    write_cache,
)
from flax_s2s.models.dense import DENSE
from flax_s2s.models.remat import layer_class
from flax_s2s.models.t5_buckets import relative_position_bucket
from flax_s2s.models.transformer import check_packed_encoding, encoder_output, source_mask, tied_logits
from flax_s2s.special_tokens import PRETRAINED_DEFAULTS, SpecialTokens

Array = jax.Array

FEED_FORWARDS = ("relu", "gated-gelu")  # the allowed `feed_forward` values (config.json's names)
T5_SPECIAL_TOKENS = PRETRAINED_DEFAULTS["t5"]
_MASKED = float(np.finfo(np.float32).min)  # added where attention may not look (finite: no NaN)


@dataclasses.dataclass(frozen=True)
class T5Config:
    """T5 hyperparameters, named after their config.json keys where those are unambiguous
    (`from_hf_config` reads one). Defaults are `t5-small`'s.

    tie_output: the output projection is the shared embedding (else an own `lm_head`).
    scale_output: the decoder output is multiplied by d_model ** -0.5 before the projection
      (T5 v1.0, whose output is tied; v1.1 neither ties nor scales).
    """

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    num_heads: int = 8
    d_ff: int = 2048
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    feed_forward: str = "relu"
    tie_output: bool = True
    scale_output: bool = True
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    dtype: Any = jnp.float32
    special_tokens: SpecialTokens = T5_SPECIAL_TOKENS
    remat: str = "none"  # rematerialised layers (`flax_s2s.models.remat`)
    remat_policy: str = "nothing_saveable"

    def __post_init__(self) -> None:
        if self.feed_forward not in FEED_FORWARDS:
            raise ValueError(
                f"T5 feed_forward must be one of {list(FEED_FORWARDS)}, got {self.feed_forward!r}"
            )
        if self.relative_attention_num_buckets < 4:
            raise ValueError("T5 relative_attention_num_buckets must be at least 4")

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], **overrides: Any) -> T5Config:
        """The config of a `save_pretrained` config.json (as a dict). Reads both ways that
        transformers has written the output head: `tie_word_embeddings` alone (false for v1.1),
        or `scale_decoder_outputs` beside a `tie_word_embeddings` that is always true."""
        tie = bool(hf.get("tie_word_embeddings", True))
        values = dict(
            vocab_size=hf["vocab_size"],
            d_model=hf["d_model"],
            d_kv=hf["d_kv"],
            num_heads=hf["num_heads"],
            d_ff=hf["d_ff"],
            num_encoder_layers=hf["num_layers"],
            num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
            relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
            feed_forward=hf.get("feed_forward_proj", "relu"),
            tie_output=tie,
            scale_output=bool(hf.get("scale_decoder_outputs", tie)),
            dropout_rate=float(hf.get("dropout_rate", 0.1)),
            layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
            special_tokens=SpecialTokens.from_hf_config({**hf, "model_type": "t5"}),
        )
        values.update(overrides)
        return cls(**values)


class RelativePositionBias(nn.Module):
    """The learned bias [buckets, heads] of a stack, looked up by relative position."""

    config: T5Config
    bidirectional: bool

    @nn.compact
    def __call__(self, query_positions: Array, key_positions: Array) -> Array:
        """query_positions [q_len], key_positions [kv_len] int (traced values allowed)
        -> bias [1, heads, q_len, kv_len] float32."""
        c = self.config
        table = self.param(
            "embedding", nn.initializers.normal(c.d_model ** -0.5),
            (c.relative_attention_num_buckets, c.num_heads), jnp.float32,
        )
        # Every distance >= max_distance shares a bucket, so a static table of the buckets of
        # -max_distance .. max_distance, indexed by the clipped relative position, is exact.
        reach = c.relative_attention_max_distance
        lookup = jnp.asarray(relative_position_bucket(
            np.arange(-reach, reach + 1), self.bidirectional,
            c.relative_attention_num_buckets, reach,
        ))
        relative = jnp.clip(key_positions[None, :] - query_positions[:, None], -reach, reach)
        bias = jnp.take(table, lookup[relative + reach], axis=0)  # [q_len, kv_len, heads]
        return bias.transpose(2, 0, 1)[None]


class T5Attention(nn.Module):
    """Multi-head attention without biases or logit scaling; the score bias (relative positions
    plus the mask, as large negatives) is given by the caller. With `sow_weights`, the weights
    [batch, heads, q_len, kv_len] are sown into "intermediates" as "attention_weights" (for the
    report's plots, as the Transformer's cross-attention does)."""

    config: T5Config
    sow_weights: bool = False

    def setup(self) -> None:
        c = self.config
        heads = (c.num_heads, c.d_kv)
        inner = c.num_heads * c.d_kv
        dense = dict(use_bias=False, dtype=c.dtype, **DENSE)
        normal = nn.initializers.normal
        # T5's init: the query's scale stands in for the 1 / sqrt(d_kv) of the logits.
        self.query = nn.DenseGeneral(heads, kernel_init=normal((c.d_model * c.d_kv) ** -0.5), **dense)
        self.key = nn.DenseGeneral(heads, kernel_init=normal(c.d_model ** -0.5), **dense)
        self.value = nn.DenseGeneral(heads, kernel_init=normal(c.d_model ** -0.5), **dense)
        self.out = nn.DenseGeneral(c.d_model, axis=(-2, -1), kernel_init=normal(inner ** -0.5), **dense)
        self.dropout = nn.Dropout(c.dropout_rate)

    def project_kv(self, x: Array) -> KeyValue:
        """x [batch, length, d_model] -> keys and values [batch, length, heads, d_kv]."""
        return {"key": self.key(x), "value": self.value(x)}

    def __call__(self, x: Array, kv: KeyValue, score_bias: Array, train: bool,
                 origin: Array | None = None, filled: Array | None = None) -> Array:
        """Queries from x [batch, q_len, d_model] over kv, with score_bias broadcastable to
        [batch, heads, q_len, kv_len] added to the logits -> [batch, q_len, d_model]. With
        `origin`, one beam-search step over caches kept in place, keys >= `filled` masked
        (`attend_beams`; score_bias [1, heads, 1, kv_len]; no dropout: beam search never trains)."""
        query = self.query(x)
        if origin is not None:
            return self.out(attend_beams(query, kv["key"], kv["value"], origin, filled,
                                         score_bias, scaled=False))
        scores = jnp.einsum("bqhd,bkhd->bhqk", query, kv["key"]).astype(jnp.float32) + score_bias
        weights = jax.nn.softmax(scores, axis=-1)
        if self.sow_weights:
            self.sow("intermediates", "attention_weights", weights)
        weights = self.dropout(weights, deterministic=not train)
        y = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(kv["value"].dtype), kv["value"])
        return self.out(y)


class T5Mlp(nn.Module):
    """ReLU(x W_i) W_o, or gelu(x W_i0) * (x W_i1) W_o ("gated-gelu")."""

    config: T5Config

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        c = self.config
        dense = dict(use_bias=False, dtype=c.dtype, kernel_init=nn.initializers.normal(c.d_model ** -0.5),
                     **DENSE)
        if c.feed_forward == "gated-gelu":
            h = jax.nn.gelu(nn.Dense(c.d_ff, name="wi_0", **dense)(x), approximate=True)
            h = h * nn.Dense(c.d_ff, name="wi_1", **dense)(x)
        else:
            h = nn.relu(nn.Dense(c.d_ff, name="wi", **dense)(x))
        h = nn.Dropout(c.dropout_rate)(h, deterministic=not train)
        return nn.Dense(c.d_model, use_bias=False, dtype=c.dtype, name="wo", **DENSE,
                        kernel_init=nn.initializers.normal(c.d_ff ** -0.5))(h)


def _rms_norm(c: T5Config, name: str) -> nn.RMSNorm:
    # flax's RMSNorm: no mean, no bias, statistics in float32 (as T5's layer norm)
    return nn.RMSNorm(epsilon=c.layer_norm_epsilon, dtype=c.dtype, name=name)


class T5EncoderLayer(nn.Module):
    config: T5Config

    def setup(self) -> None:
        c = self.config
        self.self_attention_norm = _rms_norm(c, "self_attention_norm")
        self.self_attention = T5Attention(c)
        self.mlp_norm = _rms_norm(c, "mlp_norm")
        self.mlp = T5Mlp(c)
        self.dropout = nn.Dropout(c.dropout_rate)

    def __call__(self, x: Array, score_bias: Array, train: bool) -> Array:
        """x [batch, src_len, d_model], score_bias [batch, heads, src_len, src_len]."""
        y = self.self_attention_norm(x)
        y = self.self_attention(y, self.self_attention.project_kv(y), score_bias, train)
        x = x + self.dropout(y, deterministic=not train)
        y = self.mlp(self.mlp_norm(x), train)
        return x + self.dropout(y, deterministic=not train)


class T5DecoderLayer(nn.Module):
    config: T5Config

    def setup(self) -> None:
        c = self.config
        self.self_attention_norm = _rms_norm(c, "self_attention_norm")
        self.self_attention = T5Attention(c)
        self.cross_attention_norm = _rms_norm(c, "cross_attention_norm")
        self.cross_attention = T5Attention(c, sow_weights=True)
        self.mlp_norm = _rms_norm(c, "mlp_norm")
        self.mlp = T5Mlp(c)
        self.dropout = nn.Dropout(c.dropout_rate)

    def cross_kv(self, memory: Array) -> KeyValue:
        """The encoder memory's keys and values for this layer's cross-attention."""
        return self.cross_attention.project_kv(memory)

    def __call__(
        self,
        x: Array,
        self_bias: Array,
        cross_kv: KeyValue,
        cross_bias: Array,
        train: bool,
        self_cache: KeyValue | None = None,
        position: Array | None = None,
        origin: Array | None = None,
    ) -> tuple[Array, KeyValue | None]:
        """The parallel pass over x [batch, tgt_len, d_model] when `self_cache` is None, else one
        step (tgt_len 1) whose key and value are written into self_cache [batch, heads, max_len,
        d_kv] at `position` (beam search's caches are read through `origin`, `attend_beams`).
        self_bias: relative positions and causal mask of the self-attention, cross_bias: the
        source padding mask. Returns (x, updated self_cache or None)."""
        y = self.self_attention_norm(x)
        kv = self.self_attention.project_kv(y)
        if self_cache is not None:
            kv = cache_view(self_cache := write_cache(self_cache, kv, position))
        filled = None if origin is None else position + 1
        y = self.self_attention(y, kv, self_bias, train, origin, filled)
        x = x + self.dropout(y, deterministic=not train)
        y = self.cross_attention(self.cross_attention_norm(x), cross_kv, cross_bias, train)
        x = x + self.dropout(y, deterministic=not train)
        y = self.mlp(self.mlp_norm(x), train)
        return x + self.dropout(y, deterministic=not train), self_cache


def _padding_bias(src_mask: Array) -> Array:
    """src_mask [batch, src_len] (True: real) -> [batch, 1, 1, src_len]: 0 or a large negative."""
    return jnp.where(src_mask, 0.0, _MASKED)[:, None, None, :]


def _mask_bias(mask: Array) -> Array:
    """A boolean attention mask (True: may attend; packed rows' `segment_mask`) as a bias of
    0 or a large negative, of the same shape."""
    return jnp.where(mask, 0.0, _MASKED)


class T5(nn.Module):
    """T5 encoder-decoder behind the step-function seam (see the module docstring)."""

    config: T5Config
    # encode / forward take packed rows' segment ids (their positions need not be read: within
    # one example, row positions have the relative distances its own positions have)
    TAKES_PACKED_ROWS = True

    @property
    def tgt_vocab_size(self) -> int:
        """The size of the output distribution."""
        return self.config.vocab_size

    @property
    def special_tokens(self) -> SpecialTokens:
        """The vocabulary's special ids (the decoder starts from `bos`, which is pad)."""
        return self.config.special_tokens

    def setup(self) -> None:
        c = self.config
        self.shared_embed = nn.Embed(
            c.vocab_size, c.d_model, c.dtype, embedding_init=nn.initializers.normal(1.0)
        )
        self.encoder_bias = RelativePositionBias(c, bidirectional=True)
        self.decoder_bias = RelativePositionBias(c, bidirectional=False)
        self.encoder_layers = [layer_class(T5EncoderLayer, c)(c) for _ in range(c.num_encoder_layers)]
        self.decoder_layers = [layer_class(T5DecoderLayer, c)(c) for _ in range(c.num_decoder_layers)]
        self.encoder_norm = _rms_norm(c, "encoder_norm")
        self.decoder_norm = _rms_norm(c, "decoder_norm")
        self.dropout = nn.Dropout(c.dropout_rate)
        if not c.tie_output:
            self.lm_head = nn.Dense(c.vocab_size, use_bias=False, dtype=c.dtype, **DENSE,
                                    kernel_init=nn.initializers.normal(1.0))

    def encode(
        self,
        src_tokens: Array,
        train: bool = False,
        segment_ids: Array | None = None,
        positions: Array | None = None,
    ) -> dict[str, Any]:
        """src_tokens [batch, src_len] -> memory [batch, src_len, d_model], src_mask
        [batch, src_len] and, per decoder layer, the cross-attention keys and values
        [batch, src_len, heads, d_kv].

        Packed rows: `segment_ids` [batch, src_len] mask attention to each example's own
        tokens and go into the result for `forward`; `positions` are not read (see
        TAKES_PACKED_ROWS)."""
        del positions
        packed = segment_ids is not None
        src_mask = source_mask(src_tokens, self.special_tokens.pad, segment_ids)
        where = jnp.arange(src_tokens.shape[1])
        mask_bias = (_mask_bias(segment_mask(segment_ids, segment_ids)) if packed
                     else _padding_bias(src_mask))
        score_bias = self.encoder_bias(where, where) + mask_bias
        x = self.dropout(self.shared_embed(src_tokens), deterministic=not train)
        for layer in self.encoder_layers:
            x = layer(x, score_bias, train)
        memory = self.dropout(self.encoder_norm(x), deterministic=not train)
        return encoder_output(memory, src_mask, self.decoder_layers, segment_ids)

    def init_cache(self, encoded: dict[str, Any], max_len: int) -> dict[str, list[KeyValue]]:
        """Empty self-attention caches for `max_len` positions, one per decoder layer, and the
        cross-attention keys and values laid out for a decoding loop (`empty_caches`)."""
        c = self.config
        return empty_caches(max_len, c.num_heads, c.d_kv, c.dtype, encoded["cross"])

    def init_beam_cache(self, encoded: dict[str, Any], max_len: int, beam_size: int) -> dict[str, Any]:
        """`init_cache` for beam search over encoded rows g * beam_size + slot, plus the table
        `origin` that `reorder_cache` updates instead of moving the caches (`beam_cache`)."""
        return beam_cache(self.init_cache(encoded, max_len), beam_size)

    reorder_cache = staticmethod(reorder_beam_cache)  # gathers only `origin` (see there)

    def _decode(
        self,
        encoded: dict[str, Any],
        x: Array,
        self_bias: Array,
        train: bool,
        caches: list[KeyValue] | None = None,
        position: Array | None = None,
        cross_bias: Array | None = None,
        origin: Array | None = None,
        cross: list[KeyValue] | None = None,
    ) -> tuple[Array, list[KeyValue] | None]:
        """The decoder stack from embedded inputs x [batch, len, d_model] to float32 logits.
        `cross_bias` (packed rows) replaces the source padding bias; `origin`: a beam step's;
        `cross`: the source's keys and values (default `encoded`'s; a step's from its cache)."""
        if cross_bias is None:
            cross_bias = _padding_bias(encoded["src_mask"])
        x = self.dropout(x, deterministic=not train)
        new_caches = []
        cross = encoded["cross"] if cross is None else cross
        for i, (layer, cross_kv) in enumerate(zip(self.decoder_layers, cross, strict=True)):
            x, cache = layer(x, self_bias, cross_kv, cross_bias, train,
                             None if caches is None else caches[i], position, origin)
            new_caches.append(cache)
        x = self.dropout(self.decoder_norm(x), deterministic=not train)
        if self.config.scale_output:
            x = x * jnp.asarray(self.config.d_model ** -0.5, x.dtype)
        logits = tied_logits(self.shared_embed, x) if self.config.tie_output else self.lm_head(x)
        return logits.astype(jnp.float32), (None if caches is None else new_caches)

    def forward(
        self,
        encoded: dict[str, Any],
        tgt_inputs: Array,
        train: bool = False,
        segment_ids: Array | None = None,
        positions: Array | None = None,
    ) -> Array:
        """Teacher-forced logits [batch, tgt_len, vocab] for decoder inputs [batch, tgt_len].
        Causal only: with right-padded targets no real position sees a padded one. Packed rows:
        the targets' `segment_ids` [batch, tgt_len] mask the self-attention causally within each
        example and the cross-attention to its own source (`encoded` from a packed `encode`)."""
        del positions
        where = jnp.arange(tgt_inputs.shape[1])
        cross_bias = None
        if segment_ids is None:
            causal = jnp.where(where[None, :] <= where[:, None], 0.0, _MASKED)
        else:
            check_packed_encoding(encoded, "segment ids")
            causal = _mask_bias(segment_mask(segment_ids, segment_ids, causal=True))
            cross_bias = _mask_bias(segment_mask(segment_ids, encoded["src_segment_ids"]))
        self_bias = self.decoder_bias(where, where) + causal
        logits, _ = self._decode(encoded, self.shared_embed(tgt_inputs), self_bias, train,
                                 cross_bias=cross_bias)
        return logits

    def step(self, encoded: dict[str, Any], cache: dict[str, Any], prev_tokens: Array,
             position: Array | int, train: bool = False) -> tuple[Array, dict[str, Any]]:
        """prev_tokens [batch] at `position` -> (logits [batch, vocab], updated cache). The
        self-attention bias is this position's against every cache position, those after it
        masked. `cache`: `init_cache`'s, or `init_beam_cache`'s (with the beams' `origin`)."""
        keys = jnp.arange(cache["self"][0]["key"].shape[2])
        query = jnp.asarray(position)[None]
        self_bias = self.decoder_bias(query, keys) + jnp.where(keys <= query[0], 0.0, _MASKED)
        x = self.shared_embed(prev_tokens[:, None])
        origin = step_origin(cache.get("origin"), position)
        cross = [cache_view(kv) for kv in cache["cross"]]
        logits, caches = self._decode(encoded, x, self_bias, train, cache["self"], position,
                                      origin=origin, cross=cross)
        new_cache = {"self": caches, "cross": cache["cross"]}
        return logits[:, 0], (new_cache if origin is None else {**new_cache, "origin": origin})

    def __call__(self, src_tokens: Array, tgt_inputs: Array, train: bool = False) -> Array:
        """Creates every parameter (used by `init`): the teacher-forced logits."""
        return self.forward(self.encode(src_tokens, train), tgt_inputs, train)
