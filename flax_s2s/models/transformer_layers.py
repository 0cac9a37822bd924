"""The Transformer's hyperparameters and its layers: positions, attention (self, causal self with a
KV cache, cross over the encoder memory), the MLP, and the residual sublayers they sit in, each
with its norm before ("pre") or after ("post") the residual sum (see `norms.py`). `dtype` is the
compute dtype; parameters stay float32, attention logits, softmax and norm statistics are
computed in float32. The encoder-decoder around them is `transformer.Transformer`."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flax_s2s.models.attention import (
    ATTENTIONS,
    KeyValue,
    attend,
    attend_beams,
    attention_implementation,
    attention_mask,
    cache_view,
    key_lengths,
    write_cache,
)
from flax_s2s.models.dense import DENSE
from flax_s2s.models.norms import check_position, make_norm
from flax_s2s.special_tokens import SpecialTokens

Array = jax.Array

POSITIONS = ("sinusoidal", "learned")  # the allowed `positions` values
# how sinusoidal positions lay out sin and cos: flax_s2s's own ("t2t", `sinusoidal_positions`)
# or Marian's and PEGASUS's ("marian", `marian_sinusoids`)
SINUSOIDAL_LAYOUTS = ("t2t", "marian")

# the MLP's hidden activation; "silu" is Marian's "swish"
ACTIVATIONS = {"relu": nn.relu, "gelu": lambda x: jax.nn.gelu(x, approximate=False),
               "silu": jax.nn.silu}



@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyperparameters shared by all the modules below (hashable, like Flax's examples/wmt).

    max_positions bounds learned position embeddings (and so the longest input or decode).
    num_heads, mlp_dim: the encoder's attention heads and MLP width; decoder_num_heads and
      decoder_mlp_dim the decoder's (None: the encoder's). Each stack's heads divide d_model.
    special_tokens: the vocabulary's ids; the model reads `pad` (padding masks, on both sides).

    The fields from `activation` on default to flax_s2s's own Transformer; together they give
    BART's layout (`flax_s2s.models.bart`), as fairseq builds BART from its Transformer:
    activation: the MLP's, "relu", "gelu" (exact, erf) or "silu" (Marian's "swish").
    norm_epsilon: every norm's epsilon.
    scale_embeddings: token embeddings times sqrt(d_model), before positions are added.
    embedding_norm: a norm of embeddings + positions at the start of each stack.
    position_offset: learned position p reads row p + offset of a table of max_positions + offset
      rows (BART's 2).
    positions_per_stack: learned positions: encoder and decoder each own a table (else one).
    rescale_tied_output: a tied output divides the logits by sqrt(d_model).
    output_bias: a tied output adds a learned bias [tgt_vocab] (an untied one has its own).
    sinusoidal_layout: sinusoidal positions in flax_s2s's layout ("t2t") or in Marian's and
      PEGASUS's ("marian": a table of max_positions rows, see `marian_sinusoids`).
    remat, remat_policy: rematerialised layers (`flax_s2s.models.remat`).
    """

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 128
    num_heads: int = 4
    mlp_dim: int = 512
    decoder_num_heads: int | None = None
    decoder_mlp_dim: int | None = None
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    share_embeddings: bool = False
    tie_output: bool = False
    positions: str = "sinusoidal"
    max_positions: int = 64
    dropout_rate: float = 0.0
    norm: str = "layer"
    norm_position: str = "pre"
    dtype: Any = jnp.float32
    attention: str = "auto"
    special_tokens: SpecialTokens = SpecialTokens()
    activation: str = "relu"
    norm_epsilon: float = 1e-6
    scale_embeddings: bool = False
    embedding_norm: bool = False
    position_offset: int = 0
    positions_per_stack: bool = False
    rescale_tied_output: bool = True
    output_bias: bool = False
    sinusoidal_layout: str = "t2t"
    remat: str = "none"
    remat_policy: str = "nothing_saveable"

    def __post_init__(self) -> None:
        check_position(self.norm_position)
        if self.sinusoidal_layout not in SINUSOIDAL_LAYOUTS:
            raise ValueError(f"model.sinusoidal_layout must be one of {list(SINUSOIDAL_LAYOUTS)}, "
                             f"got {self.sinusoidal_layout!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"model.activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}"
            )
        if self.attention not in ATTENTIONS:
            raise ValueError(
                f"model.attention must be one of {list(ATTENTIONS)}, got {self.attention!r}"
            )
        for name, heads in (("num_heads", self.num_heads), ("decoder_num_heads", self.decoder_heads)):
            if heads <= 0 or self.d_model % heads:
                raise ValueError(
                    f"model.d_model={self.d_model} must be divisible by model.{name}={heads}"
                )
        if self.decoder_hidden <= 0:
            raise ValueError(f"model.decoder_mlp_dim={self.decoder_mlp_dim} must be > 0")
        if self.positions not in POSITIONS:
            raise ValueError(
                f"model.positions must be one of {list(POSITIONS)}, got {self.positions!r}"
            )
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(
                "model.share_embeddings needs one vocabulary for source and target; got sizes "
                f"{self.src_vocab_size} and {self.tgt_vocab_size}"
            )

    @property
    def decoder_heads(self) -> int:
        """The decoder's attention heads (self and cross attention)."""
        return self.num_heads if self.decoder_num_heads is None else self.decoder_num_heads

    @property
    def decoder_hidden(self) -> int:
        """The hidden width of the decoder's MLPs."""
        return self.mlp_dim if self.decoder_mlp_dim is None else self.decoder_mlp_dim


def sinusoidal_positions(positions: Array, features: int) -> Array:
    """Fixed embeddings [*positions.shape, features]: sin on the first half, cos on the second,
    wavelengths from 2 pi to 10^4 * 2 pi. Computed from the positions, so any position works."""
    half = features // 2
    inv_freq = np.exp(-np.log(10_000.0) * np.arange(half) / max(half - 1, 1)).astype(np.float32)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    table = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return jnp.pad(table, [(0, 0)] * positions.ndim + [(0, features - 2 * half)])


def marian_sinusoids(rows: int, features: int) -> np.ndarray:
    """Marian's and PEGASUS's fixed table [rows, features] (float32), as their reference builds
    it in float64: position p, feature j reads angle p / 10^4 ** (2 * (j // 2) / features); sin
    of the even j on the first ceil(features / 2) features, cos of the odd j on the rest."""
    features_j = np.arange(features)
    angles = np.arange(rows)[:, None] / np.power(10_000.0, 2 * (features_j // 2) / features)
    return np.concatenate([np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])], axis=1).astype(np.float32)


class Positions(nn.Module):
    """Position embeddings for integer positions [...] -> [..., d_model]."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, positions: Array) -> Array:
        c = self.config
        if c.positions == "sinusoidal" and c.sinusoidal_layout == "marian":
            table = jnp.asarray(marian_sinusoids(c.max_positions, c.d_model))
            return jnp.take(table, positions, axis=0).astype(c.dtype)
        if c.positions == "sinusoidal" and positions.ndim > 1:
            # per-example positions of packed rows [batch, length], each < length: rows of a
            # table of `length` positions, which XLA computes once at compile time
            table = sinusoidal_positions(jnp.arange(positions.shape[-1]), c.d_model)
            return jnp.take(table, positions, axis=0).astype(c.dtype)
        if c.positions == "sinusoidal":
            return sinusoidal_positions(positions, c.d_model).astype(c.dtype)
        rows = c.max_positions + c.position_offset
        table = self.param("embedding", nn.initializers.normal(0.02), (rows, c.d_model), jnp.float32)
        return jnp.take(table, positions + c.position_offset, axis=0).astype(c.dtype)


class Attention(nn.Module):
    """Multi-head dot-product attention with separate key/value projection, so that keys and
    values can be computed once and cached. The core is `attend` (`jax.nn.dot_product_attention`,
    XLA or cuDNN as `attention_implementation` picks).

    num_heads: the heads (None: config.num_heads, the encoder's); head_dim is d_model / heads.

    With `sow_weights`, the attention weights [batch, heads, q_len, kv_len] are also sown into
    "intermediates" as "attention_weights" (for plots); XLA drops that computation when the
    collection is not asked for.
    """

    config: TransformerConfig
    sow_weights: bool = False
    num_heads: int | None = None

    def setup(self) -> None:
        c = self.config
        num_heads = self.num_heads or c.num_heads
        heads = (num_heads, c.d_model // num_heads)
        self.query = nn.DenseGeneral(heads, dtype=c.dtype, name="query", **DENSE)
        self.key = nn.DenseGeneral(heads, dtype=c.dtype, name="key", **DENSE)
        self.value = nn.DenseGeneral(heads, dtype=c.dtype, name="value", **DENSE)
        self.out = nn.DenseGeneral(c.d_model, axis=(-2, -1), dtype=c.dtype, name="out", **DENSE)

    def project_kv(self, x: Array) -> KeyValue:
        """x [batch, length, d_model] -> keys and values [batch, length, heads, head_dim]."""
        return {"key": self.key(x), "value": self.value(x)}

    def __call__(
        self,
        x: Array,
        kv: KeyValue,
        kv_lengths: Array | None = None,
        causal: bool = False,
        origin: Array | None = None,
        mask: Array | None = None,
    ) -> Array:
        """Queries from x [batch, q_len, d_model] over kv; keys at positions >= kv_lengths
        [batch] int32 are masked, with `causal` those after the query's, and where `mask`
        [batch, 1, q_len, kv_len] (packed rows) is False (see `attend`). With `origin`, one
        beam-search step over caches kept in place (see `attend_beams`).
        -> [batch, q_len, d_model]."""
        c = self.config
        query = self.query(x)
        if origin is not None:
            y = attend_beams(query, kv["key"], kv["value"], origin, kv_lengths[0])
            return self.out(y)
        implementation = attention_implementation(
            c.attention, c.dtype, query.shape[-1], query.shape[1]
        )
        y = attend(query, kv["key"], kv["value"], kv_lengths, causal, implementation, mask)
        if self.sow_weights:
            if mask is None:
                mask = attention_mask(query.shape[1], kv["key"].shape[1], kv_lengths, causal)
            scores = jnp.einsum("bqhd,bkhd->bhqk", query, kv["key"]) / np.sqrt(query.shape[-1])
            scores = jnp.where(mask, scores.astype(jnp.float32), -jnp.inf)
            self.sow("intermediates", "attention_weights", jax.nn.softmax(scores, axis=-1))
        return self.out(y)


def _attend_source(
    attention: Attention, y: Array, kv: KeyValue, src_mask: Array, mask: Array | None
) -> Array:
    """`attention` of queries from y [batch, q_len, d_model] over the source's keys and values
    `kv` [batch, src_len, heads, head_dim]: masked by the source padding, src_mask [batch,
    src_len], or where given by `mask` [batch, 1, q_len, src_len] (packed rows, `segment_mask`).
    -> [batch, q_len, d_model]."""
    if mask is None:
        return attention(y, kv, key_lengths(src_mask))
    return attention(y, kv, mask=mask)


class Mlp(nn.Module):
    """x [..., d_model] -> [..., d_model] through a hidden layer of `hidden_dim` (None:
    config.mlp_dim, the encoder's)."""

    config: TransformerConfig
    hidden_dim: int | None = None

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        c = self.config
        hidden = nn.Dense(self.hidden_dim or c.mlp_dim, dtype=c.dtype, name="hidden", **DENSE)(x)
        x = ACTIVATIONS[c.activation](hidden)
        x = nn.Dropout(c.dropout_rate)(x, deterministic=not train)
        return nn.Dense(c.d_model, dtype=c.dtype, name="output", **DENSE)(x)


class ResidualLayer(nn.Module):
    """Shared plumbing of encoder and decoder layers: sublayer i reads `_sublayer_input(i, ...)`
    and is added back by `_sublayer_output(i, ...)`; together they give pre- or post-norm.

    The sublayer input is sown into "intermediates" (what the sublayer sees, after a pre-norm),
    for the covariate-shift measurement in bench/norm_ablation.py.
    """

    config: TransformerConfig
    num_sublayers: int = 2

    def setup(self) -> None:
        c = self.config
        self.norms = [make_norm(c.norm, c.dtype, epsilon=c.norm_epsilon) for _ in range(self.num_sublayers)]
        self.dropout = nn.Dropout(c.dropout_rate)
        self.build_sublayers()

    def build_sublayers(self) -> None:
        raise NotImplementedError

    def _sublayer_input(self, index: int, name: str, x: Array, mask: Array, train: bool) -> Array:
        if self.config.norm_position == "pre":
            x = self.norms[index](x, mask, train)
        self.sow("intermediates", f"{name}_input", x)
        return x

    def _sublayer_output(self, index: int, x: Array, y: Array, mask: Array, train: bool) -> Array:
        x = x + self.dropout(y, deterministic=not train)
        if self.config.norm_position == "post":
            x = self.norms[index](x, mask, train)
        return x


class EncoderLayer(ResidualLayer):
    def build_sublayers(self) -> None:
        self.self_attention = Attention(self.config, name="self_attention")
        self.mlp = Mlp(self.config, name="mlp")

    def __call__(
        self, x: Array, src_mask: Array, train: bool, self_mask: Array | None = None
    ) -> Array:
        """x [batch, src_len, d_model], src_mask [batch, src_len] -> [batch, src_len, d_model].
        Packed rows: `self_mask` [batch, 1, src_len, src_len] (`segment_mask`) masks the
        self-attention instead of the key lengths."""
        y = self._sublayer_input(0, "self_attention", x, src_mask, train)
        kv = self.self_attention.project_kv(y)
        y = _attend_source(self.self_attention, y, kv, src_mask, self_mask)
        x = self._sublayer_output(0, x, y, src_mask, train)
        y = self._sublayer_input(1, "mlp", x, src_mask, train)
        return self._sublayer_output(1, x, self.mlp(y, train), src_mask, train)


class DecoderLayer(ResidualLayer):
    num_sublayers: int = 3

    def build_sublayers(self) -> None:
        c = self.config  # the decoder's own heads and MLP width
        self.self_attention = Attention(c, num_heads=c.decoder_heads, name="self_attention")
        self.cross_attention = Attention(c, sow_weights=True, num_heads=c.decoder_heads,
                                         name="cross_attention")
        self.mlp = Mlp(c, hidden_dim=c.decoder_hidden, name="mlp")

    def cross_kv(self, memory: Array) -> KeyValue:
        """The encoder memory's keys and values for this layer's cross-attention."""
        return self.cross_attention.project_kv(memory)

    def __call__(
        self,
        x: Array,
        tgt_mask: Array,
        cross_kv: KeyValue,
        src_mask: Array,
        train: bool,
        self_cache: KeyValue | None = None,
        position: Array | None = None,
        origin: Array | None = None,
        self_mask: Array | None = None,
        cross_mask: Array | None = None,
    ) -> tuple[Array, KeyValue | None]:
        """The parallel causal pass over x [batch, tgt_len, d_model] when `self_cache` is None;
        else one step (tgt_len == 1) at `position`, whose key and value are written into
        self_cache [batch, heads, max_len, head_dim] (heads-major; beam search's are read through
        `origin`, see `attend_beams`). Returns (x, updated self_cache or None).

        Packed rows (parallel pass only): `self_mask` [batch, 1, tgt_len, tgt_len] and
        `cross_mask` [batch, 1, tgt_len, src_len] (`segment_mask`) mask the self- and
        cross-attention instead of the causal flag and the source key lengths."""
        y = self._sublayer_input(0, "self_attention", x, tgt_mask, train)
        kv = self.self_attention.project_kv(y)
        if self_mask is not None:
            y = self.self_attention(y, kv, mask=self_mask)
        elif self_cache is None:
            # Causal only: with right-padded targets a real position never sees a padded one,
            # and what padded positions compute is never counted.
            y = self.self_attention(y, kv, causal=True)
        else:
            kv = cache_view(self_cache := write_cache(self_cache, kv, position))
            # One query over the cache: positions <= `position` are written, the rest masked.
            filled = jnp.full(x.shape[:1], position + 1, jnp.int32)
            y = self.self_attention(y, kv, filled, origin=origin)
        x = self._sublayer_output(0, x, y, tgt_mask, train)
        y = self._sublayer_input(1, "cross_attention", x, tgt_mask, train)
        y = _attend_source(self.cross_attention, y, cross_kv, src_mask, cross_mask)
        x = self._sublayer_output(1, x, y, tgt_mask, train)
        y = self._sublayer_input(2, "mlp", x, tgt_mask, train)
        return self._sublayer_output(2, x, self.mlp(y, train), tgt_mask, train), self_cache
