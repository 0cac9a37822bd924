"""LSTM/GRU encoder-decoder with additive (Bahdanau) attention.

Encoder: embeddings -> (bi)directional recurrent layers over the padded source.
Decoder: one recurrent cell per target step, reading [embedding of the previous token; the previous
attentional vector] ("input feeding", Luong et al. 2015, so the model knows what it attended to),
then additive attention over the encoder memory with the new hidden state as query, then
`tanh(W [h; context])` -> output projection.

Normalisation (`norm`, `norm_position`, see `norms.py`): "pre" normalises the input of each
recurrent layer (the embeddings and the outputs of lower encoder layers; the decoder cell's input),
"post" normalises each recurrent layer's output (every encoder layer; the decoder cell's output,
which the attention and the output layer read, while the cell's own state stays unnormalised).

The module exposes the decoder step-function seam (`encode`, `init_cache`, `step`); the
teacher-forced `forward` is the same `step` scanned over the gold inputs (see
`flax_s2s.models.Seq2Seq`), so training and decoding run one code path.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_s2s.models import unroll as unroll_policy
from flax_s2s.models.norms import check_position, make_norm
from flax_s2s.special_tokens import SpecialTokens

Array = jax.Array


class _LengthUnrolledRNN(nn.RNN):
    """`nn.RNN` whose scan unroll is `unroll_policy.scan_unroll(time steps)` of each call's input
    (its own `unroll` field is not used).

    `nn.RNN` fixes its unroll when it is constructed (here in `RnnSeq2Seq.setup`), but the length
    is known only when a batch is traced, once per length bucket. The copy bound to this module's
    own scope reads and writes the same variables (`<name>/cell/...`), so checkpoints do not
    change. (Two module calls land on that one scope: `capture_intermediates` would record the
    layer twice.)
    """

    def __call__(self, inputs: Array, *, time_major: bool | None = None, **kwargs: Any) -> Any:
        """inputs [batch, time, features] ([time, batch, features] when time-major)."""
        time_major = self.time_major if time_major is None else time_major
        time_axis = 0 if time_major else inputs.ndim - (self.cell.num_feature_axes + 1)
        unroll = unroll_policy.scan_unroll(inputs.shape[time_axis])
        if unroll != self.unroll:
            return self.clone(parent=self.scope, unroll=unroll)(
                inputs, time_major=time_major, **kwargs
            )
        return super().__call__(inputs, time_major=time_major, **kwargs)


_CELL_CLASSES = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}
CELLS = tuple(_CELL_CLASSES)  # the allowed `cell` values


def _cell(kind: str, features: int, dtype: Any, name: str | None = None) -> nn.RNNCellBase:
    return _CELL_CLASSES[kind](features, dtype=dtype, name=name)


@dataclasses.dataclass(frozen=True)
class RnnConfig:
    """Hyperparameters of `RnnSeq2Seq` (hashable, like `TransformerConfig`).

    Attributes:
      src_vocab_size, tgt_vocab_size: vocabulary sizes (PAD=0 included).
      emb_dim: embedding width; hidden_dim: recurrent state width (each direction).
      cell: one of CELLS; bidirectional: encoder reads both ways (memory is 2*hidden_dim wide).
      num_encoder_layers: stacked encoder layers; attention_dim: width of the additive scorer.
      dropout_rate: on embeddings and on the attentional vector, in training only.
      norm, norm_position: see the module docstring; "none" leaves the model unnormalised.
      max_decode_len: decoder steps with their own BatchNorm statistics (later steps share the
        last); unused by the other norms.
      dtype: compute dtype; parameters stay float32.
      special_tokens: the vocabulary's ids; the model reads `pad` (padding masks).
    """

    src_vocab_size: int
    tgt_vocab_size: int
    emb_dim: int = 64
    hidden_dim: int = 256
    cell: str = "lstm"
    bidirectional: bool = True
    num_encoder_layers: int = 1
    attention_dim: int = 128
    dropout_rate: float = 0.0
    norm: str = "none"
    norm_position: str = "pre"
    max_decode_len: int = 64
    dtype: Any = jnp.float32
    special_tokens: SpecialTokens = SpecialTokens()

    def __post_init__(self) -> None:
        check_position(self.norm_position)
        if self.cell not in CELLS:
            raise ValueError(f"model.cell must be one of {list(CELLS)}, got {self.cell!r}")


class AdditiveAttention(nn.Module):
    """score(q, k_j) = v . tanh(W_q q + W_k m_j), softmax over non-pad source positions."""

    features: int
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.query_proj = nn.Dense(self.features, use_bias=False, dtype=self.dtype)
        self.key_proj = nn.Dense(self.features, dtype=self.dtype)
        self.energy = nn.Dense(1, use_bias=False, dtype=self.dtype)

    def keys(self, memory: Array) -> Array:
        """[batch, src_len, memory_features] -> [batch, src_len, features]; once per input."""
        return self.key_proj(memory)

    def __call__(self, query: Array, keys: Array, memory: Array, src_mask: Array):
        """query [batch, features_q] -> (context [batch, memory_features], weights [batch, src])."""
        energies = self.energy(jnp.tanh(keys + self.query_proj(query)[:, None, :]))[..., 0]
        energies = jnp.where(src_mask, energies.astype(jnp.float32), -1e9)
        weights = jax.nn.softmax(energies, axis=-1)
        context = jnp.einsum("bs,bsf->bf", weights.astype(memory.dtype), memory)
        return context, weights


class RnnSeq2Seq(nn.Module):
    """Recurrent encoder-decoder with attention, shaped by `config` (see `RnnConfig`)."""

    config: RnnConfig

    @property
    def special_tokens(self) -> SpecialTokens:
        """The vocabulary's ids; the model reads `pad` (padding masks)."""
        return self.config.special_tokens

    @property
    def tgt_vocab_size(self) -> int:
        """The size of the output distribution (ensembles check it)."""
        return self.config.tgt_vocab_size

    def setup(self) -> None:
        c = self.config
        self.src_embed = nn.Embed(c.src_vocab_size, c.emb_dim, c.dtype, name="src_embed")
        self.tgt_embed = nn.Embed(c.tgt_vocab_size, c.emb_dim, c.dtype, name="tgt_embed")
        self.encoder_norms = [
            make_norm(c.norm, c.dtype, name=f"enc_norm_{i}") for i in range(c.num_encoder_layers)
        ]
        # BatchNorm in the decoder keeps running statistics per step (see norms.py).
        self.decoder_norm = make_norm(c.norm, c.dtype, name="dec_norm", num_positions=c.max_decode_len)
        self.encoder_layers = [self._encoder_layer(i) for i in range(c.num_encoder_layers)]
        # The decoder's first state is a learned function of the mean encoder memory.
        self.bridge = nn.Dense(c.hidden_dim, dtype=c.dtype, name="bridge")
        self.decoder_cell = _cell(c.cell, c.hidden_dim, c.dtype, name="decoder_cell")
        self.attention = AdditiveAttention(c.attention_dim, c.dtype, name="attention")
        self.attentional = nn.Dense(c.hidden_dim, dtype=c.dtype, name="attentional")
        self.output_proj = nn.Dense(c.tgt_vocab_size, dtype=c.dtype, name="output_proj")
        self.dropout = nn.Dropout(c.dropout_rate)

    def _encoder_layer(self, i: int) -> nn.Module:
        """Encoder layer `i`: the RNN `enc_fwd_{i}`, or `enc_{i}` running it and `enc_bwd_{i}`
        both ways (their parameters stay at `enc_fwd_{i}` and `enc_bwd_{i}`: this module owns
        them)."""
        c = self.config
        forward = _LengthUnrolledRNN(_cell(c.cell, c.hidden_dim, c.dtype), name=f"enc_fwd_{i}")
        if not c.bidirectional:
            return forward
        backward = _LengthUnrolledRNN(
            _cell(c.cell, c.hidden_dim, c.dtype), reverse=True, keep_order=True, name=f"enc_bwd_{i}"
        )
        return nn.Bidirectional(forward, backward, name=f"enc_{i}")

    def encode(self, src_tokens: Array, train: bool = False) -> dict[str, Array]:
        """src_tokens [batch, src_len] -> memory [batch, src_len, d], keys, src_mask."""
        src_mask = src_tokens != self.special_tokens.pad
        lengths = src_mask.sum(-1).astype(jnp.int32)
        x = self.dropout(self.src_embed(src_tokens), deterministic=not train)
        layers = zip(self.encoder_layers, self.encoder_norms, strict=True)
        for i, (layer, norm) in enumerate(layers):
            if self.config.norm_position == "pre":
                x = norm(x, src_mask, train)
            self.sow("intermediates", f"encoder_{i}_input", x)
            x = layer(x, seq_lengths=lengths)
            if self.config.norm_position == "post":
                x = norm(x, src_mask, train)
        return {"memory": x, "keys": self.attention.keys(x), "src_mask": src_mask}

    def init_cache(self, encoded: dict[str, Array], max_len: int) -> dict[str, Any]:
        """The decoder state before BOS: recurrent carry and a zero attentional vector."""
        del max_len  # the recurrent state does not grow with length
        mask = encoded["src_mask"][..., None].astype(encoded["memory"].dtype)
        pooled = (encoded["memory"] * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)
        h = jnp.tanh(self.bridge(pooled))
        carry = (jnp.zeros_like(h), h) if self.config.cell == "lstm" else h
        return {"carry": carry, "feed": jnp.zeros_like(h)}

    def step(
        self,
        encoded: dict[str, Array],
        cache: dict[str, Any],
        prev_tokens: Array,
        position: Array | int,
        train: bool = False,
    ) -> tuple[Array, dict[str, Any]]:
        """prev_tokens [batch] -> (logits [batch, tgt_vocab], next cache).

        With norm="batch" in training, the statistics are those of the rows still running at
        this step (prev_tokens != pad, or position 0): the recurrence leaves no batch x time to pool over. The
        running statistics are kept per `position`; nothing else reads it.
        """
        live = self.special_tokens.real_decoder_inputs(prev_tokens, position)
        x = self.dropout(self.tgt_embed(prev_tokens), deterministic=not train)
        x = jnp.concatenate([x, cache["feed"]], -1)
        if self.config.norm_position == "pre":
            x = self.decoder_norm(x, live, train, position)
        self.sow("intermediates", "decoder_cell_input", x)
        carry, h = self.decoder_cell(cache["carry"], x)
        if self.config.norm_position == "post":
            h = self.decoder_norm(h, live, train, position)
        context, weights = self.attention(h, encoded["keys"], encoded["memory"], encoded["src_mask"])
        self.sow("intermediates", "attention_weights", weights)
        attentional = jnp.tanh(self.attentional(jnp.concatenate([h, context], -1)))
        logits = self.output_proj(self.dropout(attentional, deterministic=not train))
        return logits.astype(jnp.float32), {"carry": carry, "feed": attentional}

    def __call__(self, src_tokens: Array, tgt_inputs: Array, train: bool = False) -> Array:
        """Creates every parameter (used by `init`): logits of the first target position."""
        encoded = self.encode(src_tokens, train)
        cache = self.init_cache(encoded, tgt_inputs.shape[1])
        logits, _ = self.step(encoded, cache, tgt_inputs[:, 0], 0, train)
        return logits
