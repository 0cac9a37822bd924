"""Marian (the opus-mt translation models, `MarianMTModel`) as options of flax_s2s's Transformer:
`marian_config` gives the `TransformerConfig` of a Marian checkpoint's config.json, and
`flax_s2s.pretrained.load_pretrained` fills that Transformer from a `save_pretrained` directory.

What Marian's layout sets (BART's architecture with other choices, `flax_s2s.models.bart`):
- post-norm layers, LayerNorm with torch's epsilon 1e-5, no final norm per stack and no norm of
  the embeddings;
- fixed sinusoidal positions in the reference's layout (sin on the first half of the features, cos
  on the second, no offset; `sinusoidal_layout="marian"`), max_position_embeddings of them;
- token embeddings times sqrt(d_model) when config.json's `scale_embedding` says so (true for
  opus-mt); the MLP's activation from `activation_function` (opus-mt: "swish", SiLU);
- one token embedding for encoder, decoder and output (`share_encoder_decoder_embeddings`, the
  default), or the encoder's and the decoder's own (the output then reads the decoder's); an
  output of its own where `tie_word_embeddings` is false; `final_logits_bias` added to the logits;
- the decoder starts from `<pad>` (`decoder_start_token_id`, which is pad); eos `</s>` 0 and unk
  `<unk>` 1 as opus-mt's vocab.json has them, pad the last id.

Not carried over, as for BART: attention dropout, activation dropout (the MLP's hidden layer takes
`dropout`) and layer drop.
"""

from __future__ import annotations

from typing import Any

from flax_s2s.models.bart import bart_values
from flax_s2s.models.transformer import TransformerConfig

# The TransformerConfig fields that make a Transformer Marian's (sizes, embeddings sharing and
# activation come from config.json)
MARIAN_LAYOUT = dict(
    rescale_tied_output=False, output_bias=True, positions="sinusoidal",
    sinusoidal_layout="marian", norm="layer", norm_position="post", norm_epsilon=1e-5,
    embedding_norm=False, scale_embeddings=True, activation="silu",
)


def marian_config(hf: dict[str, Any], **overrides: Any) -> TransformerConfig:
    """The Transformer config of a Marian config.json (as a dict); `overrides` replace fields
    that change no shape (dtype, dropout_rate, attention). Encoder and decoder may differ in
    heads, MLP width and layers. Fails, naming the key, on what this layout does not implement
    (a decoder vocabulary of another size, an unknown activation); the caller names the file."""
    vocab_size = hf["vocab_size"]
    decoder_vocab_size = hf.get("decoder_vocab_size") or vocab_size
    if decoder_vocab_size != vocab_size:
        raise ValueError(f"decoder_vocab_size={decoder_vocab_size} differs from vocab_size="
                         f"{vocab_size}: separate source and target vocabularies (target_vocab.json) "
                         "are not implemented")
    values = dict(
        bart_values(hf, MARIAN_LAYOUT, "marian"),
        tgt_vocab_size=decoder_vocab_size,
        share_embeddings=bool(hf.get("share_encoder_decoder_embeddings", True)),
        tie_output=bool(hf.get("tie_word_embeddings", True)),
    )
    return TransformerConfig(**{**values, **overrides})
