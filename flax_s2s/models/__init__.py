"""Models behind one seam: a decoder step function that training and decoding share.

```
encoded = model.encode(variables, src_tokens)                  # memory, source mask, ...
cache = model.init_cache(variables, encoded, max_len)           # decoder state before BOS
logits, cache = model.step(variables, encoded, cache, prev_tokens, position)   # [batch, vocab]
logits = model.forward(variables, encoded, tgt_inputs)          # teacher-forced [batch, tgt, vocab]
```
`forcing.py` and `decoding.py` use only these four functions and never look inside a model.
What belongs to an input rather than to a hypothesis (the memory, attention keys, a Transformer's
cross-attention keys and values) goes in `encoded`: beam search tiles it once per beam, while it
reorders `cache` by beam at every step, so the cache should hold only the decoder's own state.
Beam search asks for `init_beam_cache` and `reorder_cache`, which gather every cache leaf by beam
unless the module does better (the Transformer reads its self-attention cache in place, through
a table of which beam wrote each position, so no step copies the cache).

BatchNorm models (`model.norm="batch"`) carry running statistics in `variables["batch_stats"]`.
Training calls `encode` and `forward` with `update_stats=True`, which makes them return
`(result, batch_stats)`: the collection moved towards this batch's statistics. Without it a
train-mode call on such a model fails, so no update is ever dropped silently. Eval and decoding
(`train=False`) read the running statistics and write nothing.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from flax_s2s.models import unroll as unroll_policy
from flax_s2s.models.bart import BART_LAYOUT, bart_config
from flax_s2s.models.rnn import RnnConfig, RnnSeq2Seq
from flax_s2s.models.t5 import T5, T5Config
from flax_s2s.models.transformer import Transformer, TransformerConfig
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
        with `init_beam_cache` (the Transformer) keeps its beams' caches in place and follows
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


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # config.model.dtype -> compute dtype
# config.model.type -> (its hyperparameter dataclass, its module)
_MODULES: dict[str, tuple[type, type[nn.Module]]] = {
    "lstm": (RnnConfig, RnnSeq2Seq),
    "transformer": (TransformerConfig, Transformer),
    "t5": (T5Config, T5),
    "bart": (TransformerConfig, Transformer),  # in BART's layout (models/bart.py)
}
MODEL_TYPES = tuple(_MODULES)


def layer_order(path: Sequence[str]) -> tuple[tuple[str | int, ...], ...]:
    """A sort key for variable paths that orders numbered layers by number: ("decoder_layers_2",)
    before ("decoder_layers_10",). Each name is split into text and digit runs, digits compared
    as ints (text and digit runs alternate, so like compares with like)."""
    return tuple(
        tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(name)))
        for name in path
    )


def attention_weights(
    model: Seq2Seq, variables: Variables, src_tokens: Array, tgt_inputs: Array
) -> list[Array]:
    """Decoder-to-source attention under teacher forcing, for plots: one [batch, tgt, src] array
    per attention layer in layer order (heads averaged), rows summing to 1 over non-pad source
    positions.

    Modules sow their attention as intermediates named "attention_weights": per step
    ([batch, src] or [batch, heads, src]) from `step`, collected here across a scan.
    """
    encoded = model.encode(variables, src_tokens)
    cache = model.init_cache(variables, encoded, tgt_inputs.shape[1])
    module = model.module

    def body(cache, inputs):
        position, prev_tokens = inputs
        (_, cache), state = module.apply(
            variables, encoded, cache, prev_tokens, position, False,
            method=type(module).step, mutable=["intermediates"],
        )
        sown = flax.traverse_util.flatten_dict(state["intermediates"])
        paths = sorted((path for path in sown if path[-1] == "attention_weights"), key=layer_order)
        per_layer = [sown[path][-1] for path in paths]
        # [batch, src] (RNN) or [batch, heads, 1, src] (Transformer) -> [batch, src]
        return cache, [w.reshape(w.shape[0], -1, w.shape[-1]).mean(1) for w in per_layer]

    positions = jnp.arange(tgt_inputs.shape[1])
    _, weights = jax.lax.scan(body, cache, (positions, tgt_inputs.T))
    return [w.transpose(1, 0, 2) for w in weights]


def module_config(cls: type, model_config: ml_collections.ConfigDict, **derived: Any) -> Any:
    """The dataclass `cls` from the fields of `model_config` it names, then the `derived` values
    it names (which win; those it does not name are left out)."""
    names = [field.name for field in dataclasses.fields(cls)]
    values = {name: model_config[name] for name in names if name in model_config}
    values.update({name: value for name, value in derived.items() if name in names})
    return cls(**values)


def module_from_hf_config(hf: dict[str, Any], **overrides: Any) -> nn.Module:
    """The linen module a pretrained checkpoint's config.json (as a dict) describes: T5 or BART
    by its `model_type`; `overrides` replace config fields that change no shape (dtype,
    dropout_rate, ...)."""
    kind = hf.get("model_type")
    if kind == "t5":
        return T5(T5Config.from_hf_config(hf, **overrides))
    if kind == "bart":
        return Transformer(bart_config(hf, **overrides))
    raise ValueError(f"model_type {kind!r} is not one of ['t5', 'bart']")


def _pretrained_model(
    model_config: ml_collections.ConfigDict, src_vocab_size: int, tgt_vocab_size: int,
    special_tokens: SpecialTokens,
) -> Seq2Seq:
    """The model of `model_config.pretrained_config` (a checkpoint's config.json, as JSON text),
    computing in `model_config.dtype` with its dropout rate. The vocabularies must fit the
    checkpoint's embedding and carry its special ids."""
    hf = json.loads(model_config.pretrained_config)
    overrides: dict[str, Any] = dict(dtype=DTYPES[model_config.dtype], dropout_rate=model_config.dropout_rate)
    if hf.get("model_type") == "bart":
        overrides["attention"] = model_config.attention
    model = Seq2Seq(module_from_hf_config(hf, **overrides))
    size = model.module.tgt_vocab_size
    if max(src_vocab_size, tgt_vocab_size) > size:
        raise ValueError(f"the vocabularies have {src_vocab_size} / {tgt_vocab_size} tokens, but the "
                         f"pretrained model's vocab_size is {size}")
    if special_tokens != model.special_tokens:
        raise ValueError(f"the vocabularies' special tokens {special_tokens} are not the pretrained "
                         f"model's {model.special_tokens} (from its config.json)")
    return model


def build_model(
    config: ml_collections.ConfigDict,
    src_vocab_size: int,
    tgt_vocab_size: int,
    special_tokens: SpecialTokens = DEFAULT_SPECIAL_TOKENS,
) -> Seq2Seq:
    """The model named by `config.model.type`, wrapped in the step-function seam; a pretrained
    model's (`config.model.pretrained_config`, which `flax_s2s.pretrained.configure` fills from
    the checkpoint's config.json) when there is one.

    `special_tokens` are the vocabularies' ids (`vocab.model_special_tokens`); they are not part
    of the config, so a saved config rebuilds its model from the workdir's vocabularies."""
    model_config = config.model
    for key, allowed in (("type", MODEL_TYPES), ("dtype", DTYPES)):
        if model_config[key] not in allowed:
            raise ValueError(f"config.model.{key} must be one of {list(allowed)}, got {model_config[key]!r}")
    if model_config.get("pretrained_config"):
        return _pretrained_model(model_config, src_vocab_size, tgt_vocab_size, special_tokens)
    config_cls, module_cls = _MODULES[model_config.type]
    derived: dict[str, Any] = {}
    if model_config.type in ("t5", "bart"):
        if src_vocab_size != tgt_vocab_size:
            raise ValueError(
                f"config.model.type={model_config.type!r} shares one embedding between source and "
                f"target: it needs one vocabulary on both sides; got sizes {src_vocab_size} and "
                f"{tgt_vocab_size}"
            )
    if model_config.type == "bart":  # randomly initialised, in BART's layout
        derived = dict(BART_LAYOUT)
    if model_config.type == "t5":
        derived = dict(
            vocab_size=tgt_vocab_size, d_kv=model_config.d_model // model_config.num_heads,
            d_ff=model_config.mlp_dim, scale_output=model_config.tie_output,
        )
    hyperparameters = module_config(
        config_cls, model_config,
        src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
        dtype=DTYPES[model_config.dtype], special_tokens=special_tokens,
        max_decode_len=config.max_tgt_len,  # RNN: decoder steps with BatchNorm statistics
        max_positions=max(config.max_src_len, config.max_tgt_len),  # Transformer
        **derived,
    )
    return Seq2Seq(module_cls(hyperparameters))
