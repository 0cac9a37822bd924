"""mBART (Liu et al. 2020; mBART-50, Tang et al. 2020) as options of flax_s2s's Transformer:
`mbart_config` gives the `TransformerConfig` of an mBART checkpoint's config.json
(`MBartForConditionalGeneration`, model_type "mbart"), and `flax_s2s.pretrained` fills it from
a `save_pretrained` directory (`flax_s2s.pretrained.mbart`'s rules).

mBART is BART's layout (`flax_s2s.models.bart`) with pre-norm layers:
- each sublayer reads norm(x) and adds its output to x; one final LayerNorm closes each stack
  (`model.encoder.layer_norm`, `model.decoder.layer_norm`), after the `layernorm_embedding`
  that each stack applies to embeddings + positions, as BART does;
- learned positions at offset 2, exact GELU, one embedding for both stacks and the output plus
  `final_logits_bias`; embeddings times sqrt(d_model) as config.json's `scale_embedding` says
  (true for mbart-large-cc25 and the mBART-50 checkpoints);
- special ids <s> 0, <pad> 1, </s> 2, <unk> 3; the decoder starts from `</s>`
  (decoder_start_token_id 2), and in translation its first output is the target language's
  code (config.json's `forced_bos_token_id`, a run's `config.forced_bos`).
"""

from __future__ import annotations

from typing import Any

from flax_s2s.models.bart import BART_LAYOUT, bart_values
from flax_s2s.models.transformer import TransformerConfig
from flax_s2s.special_tokens import PRETRAINED_DEFAULTS

MBART_SPECIAL_TOKENS = PRETRAINED_DEFAULTS["mbart"]
# The TransformerConfig fields that make a Transformer mBART's (pre-norm gives the final norms)
MBART_LAYOUT = dict(BART_LAYOUT, norm_position="pre")


def mbart_config(hf: dict[str, Any], **overrides: Any) -> TransformerConfig:
    """The Transformer config of an mBART config.json (as a dict); `overrides` replace fields
    that change no shape (dtype, dropout_rate, attention). Encoder and decoder may differ in
    heads, MLP width and layers. Messages name the key; the caller names the file."""
    return TransformerConfig(**{**bart_values(hf, MBART_LAYOUT, "mbart"), **overrides})
