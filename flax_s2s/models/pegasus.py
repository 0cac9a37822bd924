"""PEGASUS (the summarisation models, `PegasusForConditionalGeneration`) as options of flax_s2s's
Transformer: `pegasus_config` gives the `TransformerConfig` of a PEGASUS checkpoint's config.json,
and `flax_s2s.pretrained.load_pretrained` fills that Transformer from a `save_pretrained`
directory.

What PEGASUS's layout sets (BART's architecture with other choices, `flax_s2s.models.bart`):
- pre-norm layers (x + f(norm(x))) with a final LayerNorm closing each stack, epsilon 1e-5, no
  norm of the embeddings;
- fixed sinusoidal positions in the reference's layout (Marian's, `sinusoidal_layout="marian"`);
- token embeddings times sqrt(d_model) when config.json's `scale_embedding` says so (true for the
  published checkpoints); the MLP's activation from `activation_function` (relu for them);
- one token embedding for encoder, decoder and output, plus `final_logits_bias`;
- the decoder starts from `<pad>` 0 (`decoder_start_token_id`); eos `</s>` 1; unk `<unk>` 105,
  after the tokenizer's 103 reserved ids (`flax_s2s.data.pretrained_tokenizer`).
"""

from __future__ import annotations

from typing import Any

from flax_s2s.models.bart import bart_values
from flax_s2s.models.transformer import TransformerConfig

# The TransformerConfig fields that make a Transformer PEGASUS's (sizes from config.json)
PEGASUS_LAYOUT = dict(
    share_embeddings=True, tie_output=True, rescale_tied_output=False, output_bias=True,
    positions="sinusoidal", sinusoidal_layout="marian", norm="layer", norm_position="pre",
    norm_epsilon=1e-5, embedding_norm=False, scale_embeddings=True, activation="relu",
)


def pegasus_config(hf: dict[str, Any], **overrides: Any) -> TransformerConfig:
    """The Transformer config of a PEGASUS config.json (as a dict); `overrides` replace fields
    that change no shape (dtype, dropout_rate, attention). Encoder and decoder may differ in
    heads, MLP width and layers. Fails, naming the key, on what this layout does not implement
    (an untied output, an unknown activation); the caller names the file."""
    if not hf.get("tie_word_embeddings", True):
        raise ValueError("tie_word_embeddings=false: PEGASUS's output is its embedding")
    return TransformerConfig(**{**bart_values(hf, PEGASUS_LAYOUT, "pegasus"), **overrides})
