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
they belong to the input, not to a hypothesis, so they live in `encoded` (which beam search tiles
once) rather than in the cache (which it reorders at every step).

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

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import backend as jax_backend

from flax_s2s.models.norms import check_position, make_norm
from flax_s2s.special_tokens import SpecialTokens

Array = jax.Array
KeyValue = dict[str, Array]  # {"key", "value"}: [batch, length, heads, head_dim]


POSITIONS = ("sinusoidal", "learned")  # the allowed `positions` values
ACTIVATIONS = {"relu": nn.relu, "gelu": lambda x: jax.nn.gelu(x, approximate=False)}  # MLP hidden
# The allowed `attention` values: "auto" picks cuDNN's fused kernel where it runs (see
# `attention_implementation`), "xla" always XLA's attention, "cudnn" the fused kernel (jax raises
# where it cannot run it: not a CUDA GPU, float32, an unsupported head size). A decoding step
# (one query) always runs XLA's.
ATTENTIONS = ("auto", "xla", "cudnn")
_FUSED_DTYPES = (jnp.bfloat16, jnp.float16)  # what cuDNN's fused attention computes in


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyperparameters shared by all the modules below (hashable, like Flax's examples/wmt).

    max_positions bounds learned position embeddings (and so the longest input or decode).
    special_tokens: the vocabulary's ids; the model reads `pad` (padding masks, on both sides).

    The fields from `activation` on default to flax_s2s's own Transformer; together they give
    BART's layout (`flax_s2s.models.bart`), as fairseq builds BART from its Transformer:
    activation: the MLP's, "relu" or "gelu" (exact, erf).
    norm_epsilon: every norm's epsilon.
    scale_embeddings: token embeddings times sqrt(d_model), before positions are added.
    embedding_norm: a norm of embeddings + positions at the start of each stack.
    position_offset: learned position p reads row p + offset of a table of max_positions + offset
      rows (BART's 2).
    positions_per_stack: learned positions: encoder and decoder each own a table (else one).
    rescale_tied_output: a tied output divides the logits by sqrt(d_model).
    output_bias: a tied output adds a learned bias [tgt_vocab] (an untied one has its own).
    """

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 128
    num_heads: int = 4
    mlp_dim: int = 512
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

    def __post_init__(self) -> None:
        check_position(self.norm_position)
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"model.activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}"
            )
        if self.attention not in ATTENTIONS:
            raise ValueError(
                f"model.attention must be one of {list(ATTENTIONS)}, got {self.attention!r}"
            )
        if self.d_model % self.num_heads:
            raise ValueError(
                f"model.d_model={self.d_model} must be divisible by "
                f"model.num_heads={self.num_heads}"
            )
        if self.positions not in POSITIONS:
            raise ValueError(
                f"model.positions must be one of {list(POSITIONS)}, got {self.positions!r}"
            )
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(
                "model.share_embeddings needs one vocabulary for source and target; got sizes "
                f"{self.src_vocab_size} and {self.tgt_vocab_size}"
            )


def sinusoidal_positions(positions: Array, features: int) -> Array:
    """Fixed embeddings [*positions.shape, features]: sin on the first half, cos on the second,
    wavelengths from 2 pi to 10^4 * 2 pi. Computed from the positions, so any position works."""
    half = features // 2
    inv_freq = np.exp(-np.log(10_000.0) * np.arange(half) / max(half - 1, 1)).astype(np.float32)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    table = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return jnp.pad(table, [(0, 0)] * positions.ndim + [(0, features - 2 * half)])


class Positions(nn.Module):
    """Position embeddings for integer positions [...] -> [..., d_model]."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, positions: Array) -> Array:
        c = self.config
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


def attend_beams(query: Array, key: Array, value: Array, origin: Array, filled: Array) -> Array:
    """One decoding step's self-attention for beams whose caches stay where they were written.

    query [groups * beams, 1, heads, head_dim]; key, value [groups * beams, max_len, heads,
    head_dim], where row g * beams + s holds what slot s of input g wrote at each position;
    origin [groups, beams, max_len] int32: the slot whose row holds, at each position, the key and
    value of the beam now in slot b (`Transformer.reorder_cache` keeps it). Positions >= filled
    (a scalar) are masked. -> [groups * beams, 1, heads, head_dim].

    Each query scores against every slot of its input (beams x the keys) and keeps, per position,
    only the slot `origin` names, so the result equals attention over a cache gathered by beam,
    without the gather: beam search no longer copies the whole cache at every step.
    """
    groups, beams, length = origin.shape
    heads, head_dim = query.shape[-2:]
    query = query.reshape(groups, beams, heads, head_dim)
    key = key.reshape(groups, beams, length, heads, head_dim)
    value = value.reshape(groups, beams, length, heads, head_dim)
    scores = jnp.einsum("gqhd,gslhd->ghqsl", query, key) / np.sqrt(head_dim)
    own = origin[:, None, :, None, :] == jnp.arange(beams)[None, None, None, :, None]
    mask = own & (jnp.arange(length) < filled)  # [groups, 1, beams (query), beams (slot), len]
    scores = jnp.where(mask, scores.astype(jnp.float32), -jnp.inf)
    weights = jax.nn.softmax(scores.reshape(*scores.shape[:3], -1), axis=-1).reshape(scores.shape)
    out = jnp.einsum("ghqsl,gslhd->gqhd", weights.astype(value.dtype), value)
    return out.reshape(groups * beams, 1, heads, head_dim)


class Attention(nn.Module):
    """Multi-head dot-product attention with separate key/value projection, so that keys and
    values can be computed once and cached. The core is `attend` (`jax.nn.dot_product_attention`,
    XLA or cuDNN as `attention_implementation` picks).

    With `sow_weights`, the attention weights [batch, heads, q_len, kv_len] are also sown into
    "intermediates" as "attention_weights" (for plots); XLA drops that computation when the
    collection is not asked for.
    """

    config: TransformerConfig
    sow_weights: bool = False

    def setup(self) -> None:
        c = self.config
        heads = (c.num_heads, c.d_model // c.num_heads)
        self.query = nn.DenseGeneral(heads, dtype=c.dtype, name="query")
        self.key = nn.DenseGeneral(heads, dtype=c.dtype, name="key")
        self.value = nn.DenseGeneral(heads, dtype=c.dtype, name="value")
        self.out = nn.DenseGeneral(c.d_model, axis=(-2, -1), dtype=c.dtype, name="out")

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
    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        c = self.config
        x = ACTIVATIONS[c.activation](nn.Dense(c.mlp_dim, dtype=c.dtype, name="hidden")(x))
        x = nn.Dropout(c.dropout_rate)(x, deterministic=not train)
        return nn.Dense(c.d_model, dtype=c.dtype, name="output")(x)


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
        self.self_attention = Attention(self.config, name="self_attention")
        self.cross_attention = Attention(self.config, sow_weights=True, name="cross_attention")
        self.mlp = Mlp(self.config, name="mlp")

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
        self_cache [batch, max_len, heads, head_dim] (beam search's caches are read through
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
            kv = self_cache = write_cache(self_cache, kv, position)
            # One query over the cache: positions <= `position` are written, the rest masked.
            filled = jnp.full(x.shape[:1], position + 1, jnp.int32)
            y = self.self_attention(y, kv, filled, origin=origin)
        x = self._sublayer_output(0, x, y, tgt_mask, train)
        y = self._sublayer_input(1, "cross_attention", x, tgt_mask, train)
        y = _attend_source(self.cross_attention, y, cross_kv, src_mask, cross_mask)
        x = self._sublayer_output(1, x, y, tgt_mask, train)
        y = self._sublayer_input(2, "mlp", x, tgt_mask, train)
        return self._sublayer_output(2, x, self.mlp(y, train), tgt_mask, train), self_cache


def write_cache(cache: KeyValue, kv: KeyValue, position: Array | int) -> KeyValue:
    """One step's keys and values kv [batch, 1, heads, head_dim] written into a self-attention
    cache [batch, max_len, heads, head_dim] at `position`."""
    return jax.tree.map(
        lambda cached, new: jax.lax.dynamic_update_slice_in_dim(cached, new, position, 1),
        cache, kv,
    )


def empty_caches(
    batch: int, max_len: int, num_heads: int, head_dim: int, dtype: Any, num_layers: int
) -> dict[str, list[KeyValue]]:
    """`init_cache`'s result: for each of `num_layers` decoder layers, zero keys and values
    [batch, max_len, num_heads, head_dim] of `dtype`."""
    shape = (batch, max_len, num_heads, head_dim)
    empty = {"key": jnp.zeros(shape, dtype), "value": jnp.zeros(shape, dtype)}
    return {"self": [empty for _ in range(num_layers)]}


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
        self.encoder_layers = [EncoderLayer(c) for _ in range(c.num_encoder_layers)]
        self.decoder_layers = [DecoderLayer(c) for _ in range(c.num_decoder_layers)]
        # Pre-norm leaves the residual stream unnormalised; one final norm closes each stack.
        final_kind = c.norm if c.norm_position == "pre" else "none"
        self.encoder_norm = make_norm(final_kind, c.dtype, epsilon=c.norm_epsilon)
        self.decoder_norm = make_norm(final_kind, c.dtype, epsilon=c.norm_epsilon)
        self.dropout = nn.Dropout(c.dropout_rate)
        if not c.tie_output:
            self.output_proj = nn.Dense(c.tgt_vocab_size, dtype=c.dtype)
        elif c.output_bias:
            self.output_bias = self.param(
                "output_bias", nn.initializers.zeros, (c.tgt_vocab_size,), jnp.float32
            )

    def _check_length(self, length: int) -> None:
        c = self.config
        if c.positions == "learned" and length > c.max_positions:
            raise ValueError(
                f"length {length} exceeds the {c.max_positions} learned positions "
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
        [batch, src_len, heads, head_dim].

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
        """Empty self-attention caches for `max_len` positions, one per decoder layer."""
        self._check_length(max_len)
        c = self.config
        return empty_caches(encoded["memory"].shape[0], max_len, c.num_heads,
                            c.d_model // c.num_heads, c.dtype, len(self.decoder_layers))

    def init_beam_cache(
        self, encoded: dict[str, Any], max_len: int, beam_size: int
    ) -> dict[str, Any]:
        """`init_cache` for beam search over encoded rows g * beam_size + slot, plus the table
        `origin` [groups, beam_size, max_len] int32 that `reorder_cache` updates instead of
        moving the caches (each slot starts as its own origin)."""
        cache = self.init_cache(encoded, max_len)
        groups = encoded["memory"].shape[0] // beam_size
        slots = jnp.arange(beam_size, dtype=jnp.int32)[None, :, None]
        return {**cache, "origin": jnp.broadcast_to(slots, (groups, beam_size, max_len))}

    @staticmethod
    def reorder_cache(cache: dict[str, Any], rows: Array) -> dict[str, Any]:
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
        logits = self.tgt_embed.attend(x)
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
        `cache` is `init_cache`'s ({"self": per-layer keys and values}) or `init_beam_cache`'s
        (the same plus the beams' `origin` table)."""
        if train and self.config.norm == "batch":
            raise ValueError(
                "model.norm='batch' trains on the parallel teacher-forced path only: step-by-step "
                "training has no batch x time statistics (see flax_s2s/models/norms.py)"
            )
        tgt_mask = self.special_tokens.real_decoder_inputs(prev_tokens, position)[:, None]
        x = self._decoder_inputs(prev_tokens[:, None], jnp.asarray(position)[None], tgt_mask, train)
        origin = cache.get("origin")
        if origin is not None:  # this step's keys and values go to each slot's own row
            slots = jnp.broadcast_to(jnp.arange(origin.shape[1], dtype=origin.dtype), origin.shape[:2])
            origin = jax.lax.dynamic_update_slice_in_dim(origin, slots[:, :, None], position, 2)
        self_caches = []
        for layer, self_cache, cross_kv in zip(
            self.decoder_layers, cache["self"], encoded["cross"], strict=True
        ):
            x, self_cache = layer(
                x, tgt_mask, cross_kv, encoded["src_mask"], train, self_cache, position, origin
            )
            self_caches.append(self_cache)
        logits = self._logits(x, tgt_mask, train)[:, 0]
        new_cache = {"self": self_caches}
        if origin is not None:
            new_cache["origin"] = origin
        return logits, new_cache

    def __call__(self, src_tokens: Array, tgt_inputs: Array, train: bool = False) -> Array:
        """Creates every parameter (used by `init`): the teacher-forced logits."""
        return self.forward(self.encode(src_tokens, train), tgt_inputs, train)
