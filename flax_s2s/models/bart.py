"""BART (Lewis et al. 2020) as options of flax_s2s's Transformer, as fairseq builds it from its
own: `bart_config` gives the `TransformerConfig` of a BART checkpoint's config.json, and
`flax_s2s.pretrained.load_bart` fills that Transformer from a `save_pretrained` directory.

What BART's layout sets (the `bart-base` one; `bart-large` differs only in sizes):
- post-norm layers (norm(x + f(x))), LayerNorm with torch's epsilon 1e-5, and no final norm
  per stack; a LayerNorm of embeddings + positions at the start of each stack
  (`layernorm_embedding`);
- learned positions, one table per stack, read at position + 2 (BART's offset: its tables have
  max_position_embeddings + 2 rows);
- exact (erf) GELU in the MLPs; biases on every dense layer;
- each stack its own heads, feed-forward width and layers (`encoder_attention_heads` /
  `decoder_attention_heads`, `encoder_ffn_dim` / `decoder_ffn_dim`, `encoder_layers` /
  `decoder_layers`);
- one token embedding for encoder, decoder and output, the output not rescaled, plus
  `final_logits_bias`; embeddings times sqrt(d_model) only when config.json's
  `scale_embedding` says so (false for bart-base and bart-large);
- the decoder starts from `</s>` (`decoder_start_token_id` 2, which is also eos): special ids
  bos 0 (`<s>`, an ordinary first target token here), pad 1, eos 2, unk 3, from config.json.

Not carried over: attention dropout (`attention_dropout`; `jax.nn.dot_product_attention` has
none) and layer drop; `dropout` becomes `dropout_rate` (embeddings, residuals and, in place of
`activation_dropout`, the MLP's hidden layer).
"""

from __future__ import annotations

from typing import Any

from flax_s2s.models.transformer import TransformerConfig
from flax_s2s.special_tokens import PRETRAINED_DEFAULTS, SpecialTokens

BART_SPECIAL_TOKENS = PRETRAINED_DEFAULTS["bart"]  # the decoder starts from </s>
POSITION_OFFSET = 2  # BartLearnedPositionalEmbedding's
# The TransformerConfig fields that make a Transformer BART's (the sizes come from config.json)
BART_LAYOUT = dict(
    share_embeddings=True, tie_output=True, rescale_tied_output=False, output_bias=True,
    positions="learned", position_offset=POSITION_OFFSET, positions_per_stack=True,
    norm="layer", norm_position="post", norm_epsilon=1e-5, embedding_norm=True,
    activation="gelu",
)
# config.json's activation_function -> ours ("swish" is SiLU, Marian's)
_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "swish": "silu", "silu": "silu"}


def bart_config(hf: dict[str, Any], **overrides: Any) -> TransformerConfig:
    """The Transformer config of a BART config.json (as a dict); `overrides` replace fields that
    change no shape (dtype, dropout_rate, attention). Encoder and decoder may differ in heads,
    MLP width and layers. Fails, naming the key, on a config.json whose layout this module does
    not implement (pre-norm, which is mBART's: `flax_s2s.models.mbart`; an activation other
    than gelu or relu). Messages name the key; the caller names the file."""
    if hf.get("normalize_before") or hf.get("add_final_layer_norm"):
        raise ValueError("normalize_before / add_final_layer_norm (mBART's pre-norm layout) is "
                         "not BART's; a pre-norm checkpoint has model_type 'mbart'")
    return TransformerConfig(**{**bart_values(hf), **overrides})


def bart_values(
    hf: dict[str, Any], layout: dict[str, Any] = BART_LAYOUT, kind: str = "bart"
) -> dict[str, Any]:
    """The TransformerConfig fields of a BART-like config.json: `layout` (BART's by default),
    each stack's sizes, dropout, the embedding scale, the activation and the special ids (with
    the defaults of model_type `kind`)."""
    activation = hf.get("activation_function", "gelu")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation_function {activation!r} is not one of {list(_ACTIVATIONS)}")
    return dict(
        layout,
        src_vocab_size=hf["vocab_size"],
        tgt_vocab_size=hf["vocab_size"],
        d_model=hf["d_model"],
        num_heads=hf["encoder_attention_heads"],
        mlp_dim=hf["encoder_ffn_dim"],
        decoder_num_heads=hf.get("decoder_attention_heads", hf["encoder_attention_heads"]),
        decoder_mlp_dim=hf.get("decoder_ffn_dim", hf["encoder_ffn_dim"]),
        num_encoder_layers=hf["encoder_layers"],
        num_decoder_layers=hf["decoder_layers"],
        max_positions=hf["max_position_embeddings"],
        dropout_rate=float(hf.get("dropout", 0.1)),
        scale_embeddings=bool(hf.get("scale_embedding", False)),
        activation=_ACTIVATIONS[activation],
        special_tokens=SpecialTokens.from_hf_config({**hf, "model_type": kind}),
    )
