"""The model kinds, one record each, and `build_model`: a run's config -> the model behind the seam.

A model kind (`config.model.type`) is registered here once, with its hyperparameter dataclass,
its linen module, the hyperparameters it derives from the run, how it reads a pretrained
checkpoint's config.json, whether source and target share a vocabulary, and its own config
checks. Whether it trains on packed rows is its module's `TAKES_PACKED_ROWS`. A new kind is a
module of its own plus one record in `KINDS`; a kind with pretrained checkpoints also has its
tensor rules (`flax_s2s.pretrained`: a `TensorLayout` in `load.LAYOUTS`) and its config.json's
default special ids (`special_tokens.PRETRAINED_DEFAULTS`, whose keys `hf_files.ARCHITECTURES`
lists).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from flax_s2s import config_checks
from flax_s2s.errors import ConfigError
from flax_s2s.models.bart import BART_LAYOUT, bart_config
from flax_s2s.models.marian import MARIAN_LAYOUT, marian_config
from flax_s2s.models.mbart import MBART_LAYOUT, mbart_config
from flax_s2s.models.norms import NORM_KINDS, NORM_POSITIONS
from flax_s2s.models.pegasus import PEGASUS_LAYOUT, pegasus_config
from flax_s2s.models.remat import REMAT_FIELDS
from flax_s2s.models.rnn import CELLS, RnnConfig, RnnSeq2Seq
from flax_s2s.models.seam import Seq2Seq
from flax_s2s.models.t5 import FEED_FORWARDS, T5, T5Config
from flax_s2s.models.transformer import ATTENTIONS, POSITIONS, Transformer, TransformerConfig
from flax_s2s.special_tokens import DEFAULT_SPECIAL_TOKENS, SpecialTokens

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # config.model.dtype -> compute dtype
ModelConfig = ml_collections.ConfigDict  # a run's `config.model`


def _no_derived(model_config: ModelConfig, tgt_vocab_size: int) -> dict[str, Any]:
    return {}


def _no_checks(config: ml_collections.ConfigDict) -> None:
    return None


@dataclasses.dataclass(frozen=True)
class ModelKind:
    """One `config.model.type`.

    config_class / module_class: the hyperparameter dataclass and the linen module built from it
      (`module_class(config_class(...))`); the dataclass takes the run config's fields it names.
    derived: (config.model, target vocabulary size) -> hyperparameters the kind derives from the
      run config beyond the fields of the same name (they win over those).
    from_hf_config: (config.json as a dict, **overrides) -> the module of a pretrained checkpoint
      of this kind (None: no pretrained checkpoints); `hf_overrides` names the `config.model`
      fields passed on as overrides beside dtype and dropout, `hf_dropout_key` config.json's
      dropout.
    shared_vocab: source and target share one embedding, so one vocabulary.
    check_config: the kind's own checks of a run config whose model.type it is.
    why_not_packed: why the kind does not train on packed rows, where it does not.
    """

    name: str
    config_class: type
    module_class: type[nn.Module]
    derived: Callable[[ModelConfig, int], dict[str, Any]] = _no_derived
    from_hf_config: Callable[..., nn.Module] | None = None
    hf_overrides: tuple[str, ...] = ()
    hf_dropout_key: str = "dropout"
    shared_vocab: bool = False
    check_config: Callable[[ml_collections.ConfigDict], None] = _no_checks
    why_not_packed: str = "it reads no segments"

    @property
    def packs(self) -> bool:
        """Whether the kind trains on packed rows (its module's `TAKES_PACKED_ROWS`)."""
        return getattr(self.module_class, "TAKES_PACKED_ROWS", False)


def _check_heads(config: ml_collections.ConfigDict) -> None:
    """The heads divide d_model (of a model built from config.model, not a pretrained one)."""
    model = config.model
    if not model.pretrained_config and model.d_model % model.num_heads:
        raise ConfigError(f"config.model.d_model={model.d_model}: must be divisible by "
                          f"config.model.num_heads={model.num_heads}")


def _check_transformer(config: ml_collections.ConfigDict) -> None:
    """The Transformer and BART: heads divide d_model; cuDNN's attention computes in 16 bits."""
    _check_heads(config)
    if config.model.attention == "cudnn" and config.model.dtype == "float32":
        raise ConfigError(
            "config.model.dtype='float32': config.model.attention='cudnn' needs 'bfloat16' "
            "(cuDNN's fused attention computes in 16 bits; 'auto' picks it where it can run)"
        )


def _t5_derived(model_config: ModelConfig, tgt_vocab_size: int) -> dict[str, Any]:
    return dict(vocab_size=tgt_vocab_size, d_kv=model_config.d_model // model_config.num_heads,
                d_ff=model_config.mlp_dim, scale_output=model_config.tie_output)


KINDS = (
    ModelKind(
        "lstm", RnnConfig, RnnSeq2Seq,
        why_not_packed="the RNN's recurrent state would carry from one example of a row into the "
                       "next unless reset at each example's start, which costs its sequential "
                       "scan its simplicity",
    ),
    ModelKind("transformer", TransformerConfig, Transformer, check_config=_check_transformer),
    ModelKind(
        "t5", T5Config, T5, derived=_t5_derived,
        from_hf_config=lambda hf, **overrides: T5(T5Config.from_hf_config(hf, **overrides)),
        hf_dropout_key="dropout_rate", shared_vocab=True, check_config=_check_heads,
    ),
    ModelKind(  # the Transformer in BART's layout (models/bart.py), random or pretrained
        "bart", TransformerConfig, Transformer, derived=lambda *_: dict(BART_LAYOUT),
        from_hf_config=lambda hf, **overrides: Transformer(bart_config(hf, **overrides)),
        hf_overrides=("attention",), shared_vocab=True, check_config=_check_transformer,
    ),
    ModelKind(  # BART's layout with pre-norm layers and final norms (models/mbart.py)
        "mbart", TransformerConfig, Transformer, derived=lambda *_: dict(MBART_LAYOUT),
        from_hf_config=lambda hf, **overrides: Transformer(mbart_config(hf, **overrides)),
        hf_overrides=("attention",), shared_vocab=True, check_config=_check_transformer,
    ),
    ModelKind(  # Marian's layout (models/marian.py): one vocab.json for both sides
        "marian", TransformerConfig, Transformer, derived=lambda *_: dict(MARIAN_LAYOUT),
        from_hf_config=lambda hf, **overrides: Transformer(marian_config(hf, **overrides)),
        hf_overrides=("attention",), shared_vocab=True, check_config=_check_transformer,
    ),
    ModelKind(  # PEGASUS's layout (models/pegasus.py)
        "pegasus", TransformerConfig, Transformer, derived=lambda *_: dict(PEGASUS_LAYOUT),
        from_hf_config=lambda hf, **overrides: Transformer(pegasus_config(hf, **overrides)),
        hf_overrides=("attention",), shared_vocab=True, check_config=_check_transformer,
    ),
)
MODEL_KINDS: dict[str, ModelKind] = {kind.name: kind for kind in KINDS}
MODEL_TYPES = tuple(MODEL_KINDS)
PRETRAINED_TYPES = tuple(kind.name for kind in KINDS if kind.from_hf_config is not None)
# config.model fields -> their allowed values, whichever kind reads them
FIELD_CHOICES = {
    "type": MODEL_TYPES, "dtype": tuple(DTYPES), "cell": CELLS, "norm": NORM_KINDS,
    "norm_position": NORM_POSITIONS, "positions": POSITIONS, "attention": ATTENTIONS,
    "feed_forward": FEED_FORWARDS,
}
_POSITIVE_FIELDS = ("emb_dim", "hidden_dim", "num_encoder_layers", "attention_dim", "d_model",
                    "num_heads", "mlp_dim", "num_decoder_layers", "relative_attention_max_distance")


def model_kind(name: str | None) -> ModelKind:
    """The record of `config.model.type` (or of a config.json's `model_type`) `name`."""
    if name not in MODEL_KINDS:
        raise ValueError(f"model type {name!r} is not one of {list(MODEL_TYPES)}")
    return MODEL_KINDS[name]


def check_config(config: ml_collections.ConfigDict) -> None:
    """`config.model`'s fields, then its kind's own checks, a pretrained config's kind, and
    packing (`config.pack`) against the kind."""
    for field, allowed in FIELD_CHOICES.items():
        config_checks.one_of(config, f"model.{field}", allowed)
    config_checks.positive(config, *(f"model.{field}" for field in _POSITIVE_FIELDS))
    config_checks.fraction(config, "model.dropout_rate")
    kind = MODEL_KINDS[config.model.type]
    kind.check_config(config)
    if config.model.pretrained_config and kind.from_hf_config is None:
        raise ConfigError(f"config.model.type={kind.name!r} with a pretrained_config: a "
                          f"pretrained model is one of {list(PRETRAINED_TYPES)}")
    if config.pack and not kind.packs:
        packed = [k.name for k in KINDS if k.packs]
        raise ConfigError(f"config.pack=True with config.model.type={kind.name!r}: packing trains "
                          f"model.type in {packed} only; {kind.why_not_packed}")


def module_config(cls: type, model_config: ModelConfig, **derived: Any) -> Any:
    """The dataclass `cls` from the fields of `model_config` it names, then the `derived` values
    it names (which win; those it does not name are left out)."""
    names = [field.name for field in dataclasses.fields(cls)]
    values = {name: model_config[name] for name in names if name in model_config}
    values.update({name: value for name, value in derived.items() if name in names})
    return cls(**values)


def module_from_hf_config(hf: dict[str, Any], **overrides: Any) -> nn.Module:
    """The linen module a pretrained checkpoint's config.json (as a dict) describes, by its
    `model_type`; `overrides` replace config fields that change no shape (dtype, dropout_rate,
    ...)."""
    kind = MODEL_KINDS.get(hf.get("model_type"))  # None: not a kind at all
    if kind is None or kind.from_hf_config is None:
        raise ValueError(f"model_type {hf.get('model_type')!r} is not one of {list(PRETRAINED_TYPES)}")
    return kind.from_hf_config(hf, **overrides)


def _pretrained_model(
    model_config: ModelConfig, src_vocab_size: int, tgt_vocab_size: int,
    special_tokens: SpecialTokens,
) -> Seq2Seq:
    """The model of `model_config.pretrained_config` (a checkpoint's config.json, as JSON text),
    computing in `model_config.dtype` with its dropout rate. The vocabularies must fit the
    checkpoint's embedding and carry its special ids."""
    hf = json.loads(model_config.pretrained_config)
    kind = model_kind(hf.get("model_type"))
    overrides: dict[str, Any] = dict(dtype=DTYPES[model_config.dtype],
                                     dropout_rate=model_config.dropout_rate)
    overrides.update({field: model_config[field] for field in REMAT_FIELDS if field in model_config})
    overrides.update({field: model_config[field] for field in kind.hf_overrides})
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
    the checkpoint's config.json) when there is one. The config is checked by `check_config`
    (at the edge, before anything is read); only what needs the vocabularies is checked here.

    `special_tokens` are the vocabularies' ids (`vocab.model_special_tokens`); they are not part
    of the config, so a saved config rebuilds its model from the workdir's vocabularies."""
    model_config = config.model
    if model_config.get("pretrained_config"):
        return _pretrained_model(model_config, src_vocab_size, tgt_vocab_size, special_tokens)
    kind = model_kind(model_config.type)
    if kind.shared_vocab and src_vocab_size != tgt_vocab_size:
        raise ValueError(
            f"config.model.type={kind.name!r} shares one embedding between source and target: it "
            f"needs one vocabulary on both sides; got sizes {src_vocab_size} and {tgt_vocab_size}"
        )
    hyperparameters = module_config(
        kind.config_class, model_config,
        src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
        dtype=DTYPES[model_config.dtype], special_tokens=special_tokens,
        max_decode_len=config.max_tgt_len,  # RNN: decoder steps with BatchNorm statistics
        max_positions=max(config.max_src_len, config.max_tgt_len),  # Transformer
        **kind.derived(model_config, tgt_vocab_size),
    )
    return Seq2Seq(kind.module_class(hyperparameters))
