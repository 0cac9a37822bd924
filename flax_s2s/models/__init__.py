"""Models behind one seam: a decoder step function that training and decoding share.

```
encoded = model.encode(variables, src_tokens)                  # memory, source mask, ...
cache = model.init_cache(variables, encoded, max_len)           # decoder state before BOS
logits, cache = model.step(variables, encoded, cache, prev_tokens, position)   # [batch, vocab]
logits = model.forward(variables, encoded, tgt_inputs)          # teacher-forced [batch, tgt, vocab]
```
`forcing.py` and `decoding.py` use only these four functions and never look inside a model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from flax_s2s.data.vocab import BOS
from flax_s2s.models.rnn import RnnSeq2Seq

Array = jax.Array
Variables = dict[str, Any]


def decoder_inputs(tgt_tokens: Array) -> Array:
    """Teacher-forced decoder inputs: targets shifted right behind BOS. [batch, tgt_len]."""
    bos = jnp.full_like(tgt_tokens[:, :1], BOS)
    return jnp.concatenate([bos, tgt_tokens[:, :-1]], axis=1)


def _rngs(rng: Array | None) -> dict[str, Array]:
    return {} if rng is None else {"dropout": rng}


@dataclasses.dataclass(frozen=True)
class Seq2Seq:
    """Pure functions of (variables, inputs) around a linen module; hashable, so it can be a static
    argument of `jax.jit`.

    `variables` is the module's variable dict ({"params": ...}, plus "batch_stats" for BatchNorm).
    Modules whose decoder is sequential anyway (RNNs) get `forward` as `step` scanned over the gold
    inputs; modules with a parallel teacher-forced path provide a `forward` method.
    """

    module: nn.Module

    def init(self, rng: Array, src_tokens: Array, tgt_tokens: Array) -> Variables:
        """Creates the variables for inputs shaped like `src_tokens` / `tgt_tokens`."""
        return self.module.init(rng, src_tokens, decoder_inputs(tgt_tokens))

    def encode(
        self, variables: Variables, src_tokens: Array, *, train: bool = False, rng: Array | None = None
    ) -> Any:
        return self.module.apply(
            variables, src_tokens, train, method=type(self.module).encode, rngs=_rngs(rng)
        )

    def init_cache(self, variables: Variables, encoded: Any, max_len: int) -> Any:
        """Decoder state before the first step; `max_len` sizes a KV cache (ignored by RNNs)."""
        del max_len  # the recurrent state does not grow with length
        return self.module.apply(variables, encoded, method=type(self.module).init_cache)

    def step(
        self,
        variables: Variables,
        encoded: Any,
        cache: Any,
        prev_tokens: Array,
        position: Array | int,
        *,
        train: bool = False,
        rng: Array | None = None,
    ) -> tuple[Array, Any]:
        """One decoder step: prev_tokens [batch] at `position` -> (logits [batch, vocab], cache)."""
        del position  # the recurrent state already knows where it is
        return self.module.apply(
            variables, encoded, cache, prev_tokens, train,
            method=type(self.module).step, rngs=_rngs(rng),
        )

    def forward(
        self,
        variables: Variables,
        encoded: Any,
        tgt_inputs: Array,
        *,
        train: bool = False,
        rng: Array | None = None,
    ) -> Array:
        """Teacher-forced logits [batch, tgt_len, vocab] for decoder inputs [batch, tgt_len]."""
        cache = self.init_cache(variables, encoded, tgt_inputs.shape[1])

        def body(cache, inputs):
            position, prev_tokens = inputs
            step_rng = None if rng is None else jax.random.fold_in(rng, position)
            logits, cache = self.step(
                variables, encoded, cache, prev_tokens, position, train=train, rng=step_rng
            )
            return cache, logits

        positions = jnp.arange(tgt_inputs.shape[1])
        _, logits = jax.lax.scan(body, cache, (positions, tgt_inputs.T))
        return logits.transpose(1, 0, 2)


def attention_weights(
    model: Seq2Seq, variables: Variables, src_tokens: Array, tgt_inputs: Array
) -> list[Array]:
    """Decoder-to-source attention under teacher forcing, for plots: one [batch, tgt, src] array
    per attention layer (heads averaged), rows summing to 1 over non-pad source positions.

    Modules sow their attention as intermediates named "attention_weights": per step
    ([batch, src] or [batch, heads, src]) from `step`, collected here across a scan.
    """
    encoded = model.encode(variables, src_tokens)
    cache = model.init_cache(variables, encoded, tgt_inputs.shape[1])
    module = model.module

    def body(cache, inputs):
        position, prev_tokens = inputs
        (_, cache), state = module.apply(
            variables, encoded, cache, prev_tokens, False,
            method=type(module).step, mutable=["intermediates"],
        )
        sown = jax.tree.leaves(
            state["intermediates"], is_leaf=lambda x: isinstance(x, tuple)
        )  # tuples of sown values, one tuple per sowing layer, in module order
        per_layer = [jnp.asarray(values[-1]) for values in sown]
        return cache, [w.mean(1) if w.ndim == 3 else w for w in per_layer]

    positions = jnp.arange(tgt_inputs.shape[1])
    _, weights = jax.lax.scan(body, cache, (positions, tgt_inputs.T))
    return [w.transpose(1, 0, 2) for w in weights]


def build_model(config: ml_collections.ConfigDict, src_vocab_size: int, tgt_vocab_size: int) -> Seq2Seq:
    """The model named by `config.model.type`, wrapped in the step-function seam."""
    model_config = config.model
    if model_config.type == "lstm":
        module = RnnSeq2Seq(
            src_vocab_size=src_vocab_size,
            tgt_vocab_size=tgt_vocab_size,
            emb_dim=model_config.emb_dim,
            hidden_dim=model_config.hidden_dim,
            cell=model_config.cell,
            bidirectional=model_config.bidirectional,
            num_encoder_layers=model_config.num_encoder_layers,
            attention_dim=model_config.attention_dim,
            dropout_rate=model_config.dropout_rate,
        )
        return Seq2Seq(module)
    raise ValueError(f"config.model.type must be one of ['lstm'], got {model_config.type!r}")
