"""The seam every model kind sits behind: a decoder step function that training and decoding share.

```
encoded = model.encode(variables, src_tokens)                  # memory, source mask, ...
cache = model.init_cache(variables, encoded, max_len)           # decoder state before BOS
logits, cache = model.step(variables, encoded, cache, prev_tokens, position)   # [batch, vocab]
logits = model.forward(variables, encoded, tgt_inputs)          # teacher-forced [batch, tgt, vocab]
```
`forcing.py` and `decoding/` use only these four functions and never look inside a model.
What belongs to an input rather than to a hypothesis (the memory, attention keys, a Transformer's
cross-attention keys and values) goes in `encoded`: beam search tiles it once per beam, while it
reorders `cache` by beam at every step, so the cache should hold only the decoder's own state.
Beam search asks for `init_beam_cache` and `reorder_cache`, which gather every cache leaf by beam
unless the module does better (the Transformer and T5 read their self-attention caches in place,
through a table of which beam wrote each position, so no step copies the cache).

BatchNorm models (`model.norm="batch"`) carry running statistics in `variables["batch_stats"]`.
Training calls `encode` and `forward` with `update_stats=True`, which makes them return
`(result, batch_stats)`: the collection moved towards this batch's statistics. Without it a
train-mode call on such a model fails, so no update is ever dropped silently. Eval and decoding
(`train=False`) read the running statistics and write nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_s2s.models import unroll as unroll_policy
from flax_s2s.special_tokens import DEFAULT_SPECIAL_TOKENS, SpecialTokens

Array = jax.Array
Variables = dict[str, Any]


def decoder_inputs(
    tgt_tokens: Array, bos: int = DEFAULT_SPECIAL_TOKENS.bos, segment_ids: Array | None = None
) -> Array:
    """Teacher-forced decoder inputs: targets shifted right behind `bos` (the model's,
    `model.special_tokens.bos`). [batch, tgt_len] -> [batch, tgt_len].

    Packed rows (`segment_ids` [batch, tgt_len], 0 on padding): shifted right per example, so
    every example starts with `bos` and never reads the previous example's last token; padding
    positions keep their (padding) tokens."""
    start = jnp.full_like(tgt_tokens[:, :1], bos)
    shifted = jnp.concatenate([start, tgt_tokens[:, :-1]], axis=1)
    if segment_ids is None:
        return shifted
    previous = jnp.pad(segment_ids[:, :-1], ((0, 0), (1, 0)))
    inputs = jnp.where(segment_ids != previous, bos, shifted)  # bos at each example's start
    return jnp.where(segment_ids == 0, tgt_tokens, inputs)


def _segment_kwargs(segments: dict[str, Array] | None) -> dict[str, Array]:
    """A packed side's {"segment_ids", "positions"} as the module's keyword arguments."""
    if segments is None:
        return {}
    return {"segment_ids": segments["segment_ids"], "positions": segments["positions"]}


def _rngs(rng: Array | None) -> dict[str, Array]:
    return {} if rng is None else {"dropout": rng}


@dataclasses.dataclass(frozen=True)
class Seq2Seq:
    """Pure functions of (variables, inputs) around a linen module; hashable, so it can be a static
    argument of `jax.jit`.

    `variables` is the module's variable dict ({"params": ...}, plus "batch_stats" for BatchNorm).
    Modules with a parallel teacher-forced path (Transformer) provide a `forward` method; modules
    whose decoder is sequential anyway (RNNs) get `forward` as `step` scanned over the gold inputs.
    """

    module: nn.Module

    def __post_init__(self) -> None:
        self.special_tokens.check_fits(self.module.tgt_vocab_size)

    @property
    def special_tokens(self) -> SpecialTokens:
        """The target vocabulary's special ids, which the model was built with."""
        return self.module.special_tokens

    @property
    def has_parallel_forward(self) -> bool:
        """Whether `forward` runs all positions at once (True) or scans `step` (False)."""
        return hasattr(type(self.module), "forward")

    def init(self, rng: Array, src_tokens: Array, tgt_tokens: Array) -> Variables:
        """Creates the variables for inputs shaped like `src_tokens` / `tgt_tokens`."""
        return self.module.init(
            rng, src_tokens, decoder_inputs(tgt_tokens, self.special_tokens.bos)
        )

    def _apply(self, variables, *args, method, train=False, rng=None, update_stats=False,
               **kwargs):
        method = getattr(type(self.module), method)
        if update_stats:
            result, mutated = self.module.apply(
                variables, *args, train, method=method, rngs=_rngs(rng), mutable=["batch_stats"],
                **kwargs,
            )
            return result, mutated.get("batch_stats", {})
        if train and variables.get("batch_stats"):
            raise ValueError(
                "this model keeps BatchNorm running statistics: call it with update_stats=True "
                "in training and keep the returned batch_stats"
            )
        return self.module.apply(variables, *args, train, method=method, rngs=_rngs(rng), **kwargs)

    @property
    def takes_packed_rows(self) -> bool:
        """Whether `encode` and `forward` take packed rows (`segments`): the Transformer, BART
        and T5 do; an RNN's recurrent state would carry from one example of a row into the
        next."""
        return getattr(type(self.module), "TAKES_PACKED_ROWS", False)

    def _check_packable(self, segments: dict[str, Array] | None) -> None:
        if segments is not None and not self.takes_packed_rows:
            raise ValueError(f"{type(self.module).__name__} takes no packed rows (segments)")

    def encode(
        self,
        variables: Variables,
        src_tokens: Array,
        *,
        train: bool = False,
        rng: Array | None = None,
        update_stats: bool = False,
        segments: dict[str, Array] | None = None,
    ) -> Any:
        """src_tokens [batch, src_len] -> the encoder's output (memory, source mask, ...).
        `segments`: a packed batch's source {"segment_ids", "positions"} [batch, src_len]
        (`flax_s2s.data.packing.segments`; models that `takes_packed_rows` only)."""
        self._check_packable(segments)
        return self._apply(
            variables, src_tokens, method="encode", train=train, rng=rng, update_stats=update_stats,
            **_segment_kwargs(segments),
        )

    def init_cache(self, variables: Variables, encoded: Any, max_len: int) -> Any:
        """Decoder state before the first step; `max_len` sizes a KV cache (ignored by RNNs)."""
        return self.module.apply(variables, encoded, max_len, method=type(self.module).init_cache)

    def init_beam_cache(
        self, variables: Variables, encoded: Any, max_len: int, beam_size: int
    ) -> Any:
        """`init_cache` for beam search, whose encoded rows are g * beam_size + slot: a module
        with `init_beam_cache` (the Transformer, T5) keeps its beams' caches in place and follows
        them through a table that `reorder_cache` updates."""
        module = type(self.module)
        if not hasattr(module, "init_beam_cache"):
            return self.init_cache(variables, encoded, max_len)
        return self.module.apply(variables, encoded, max_len, beam_size,
                                 method=module.init_beam_cache)

    def reorder_cache(self, cache: Any, rows: Array) -> Any:
        """The cache of beams whose new row r continues old row rows[r]: the module's own
        `reorder_cache` where it has one, else every leaf gathered by row."""
        module = type(self.module)
        if hasattr(module, "reorder_cache"):
            return module.reorder_cache(cache, rows)
        return jax.tree.map(lambda leaf: leaf[rows], cache)

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
        update_stats: bool = False,
    ) -> tuple[Array, Any]:
        """One decoder step: prev_tokens [batch] at `position` -> (logits [batch, vocab], cache)."""
        return self._apply(
            variables, encoded, cache, prev_tokens, position,
            method="step", train=train, rng=rng, update_stats=update_stats,
        )

    def forward(
        self,
        variables: Variables,
        encoded: Any,
        tgt_inputs: Array,
        *,
        train: bool = False,
        rng: Array | None = None,
        update_stats: bool = False,
        segments: dict[str, Array] | None = None,
    ) -> Array:
        """Teacher-forced logits [batch, tgt_len, vocab] for decoder inputs [batch, tgt_len].
        `segments`: a packed batch's target {"segment_ids", "positions"} [batch, tgt_len], with
        `encoded` from a packed `encode` and inputs shifted per example (`decoder_inputs`)."""
        self._check_packable(segments)
        if self.has_parallel_forward:
            return self._apply(
                variables, encoded, tgt_inputs,
                method="forward", train=train, rng=rng, update_stats=update_stats,
                **_segment_kwargs(segments),
            )
        return self.scanned_forward(
            variables, encoded, tgt_inputs, train=train, rng=rng, update_stats=update_stats
        )

    def scanned_forward(
        self,
        variables: Variables,
        encoded: Any,
        tgt_inputs: Array,
        *,
        train: bool = False,
        rng: Array | None = None,
        update_stats: bool = False,
    ) -> Array:
        """`forward` as `step` under `lax.scan` over the gold inputs (threading batch_stats when
        updating them): the RNN's forward, and the reference for a module's parallel one."""
        cache = self.init_cache(variables, encoded, tgt_inputs.shape[1])
        stats = variables.get("batch_stats", {}) if update_stats else None

        def body(carry, inputs):
            cache, stats = carry
            position, prev_tokens = inputs
            step_rng = None if rng is None else jax.random.fold_in(rng, position)
            step_variables = variables if stats is None else {**variables, "batch_stats": stats}
            result = self.step(
                step_variables, encoded, cache, prev_tokens, position,
                train=train, rng=step_rng, update_stats=update_stats,
            )
            (logits, cache), stats = result if update_stats else (result, None)
            return (cache, stats), logits

        length = tgt_inputs.shape[1]
        (_, stats), logits = jax.lax.scan(
            body, (cache, stats), (jnp.arange(length), tgt_inputs.T),
            unroll=unroll_policy.scan_unroll(length),
        )
        logits = logits.transpose(1, 0, 2)
        return (logits, stats) if update_stats else logits
