"""BART's tensor rules (`BartForConditionalGeneration`'s names) into the Transformer in BART's
layout (`flax_s2s.models.bart`)."""

from __future__ import annotations

import re

from flax_s2s.pretrained.rules import Rule, TensorLayout

BART_EMBEDDINGS = ("model.shared.weight", "model.encoder.embed_tokens.weight",
                    "model.decoder.embed_tokens.weight", "lm_head.weight")


def bart_rules() -> list[Rule]:
    """The rules of every BART tensor (`BartForConditionalGeneration`'s names) into the
    Transformer in BART's layout. Layouts as T5's, plus "heads_bias" ([heads * d_kv] ->
    [heads, d_kv]) and "row" ([1, vocab] -> [vocab], `final_logits_bias`)."""
    rules = [(re.escape(name), "src_embed/embedding", "as_is") for name in BART_EMBEDDINGS]
    rules.append((r"final_logits_bias", "output_bias", "row"))
    norm = {"weight": "scale", "bias": "bias"}
    for stack, positions in (("encoder", "positions"), ("decoder", "decoder_positions")):
        rules.append((rf"model\.{stack}\.embed_positions\.weight", f"{positions}/embedding", "as_is"))
        for hf_param, param in norm.items():
            rules.append((rf"model\.{stack}\.layernorm_embedding\.{hf_param}",
                          f"{stack}_embedding_norm/layer_norm/{param}", "as_is"))
        attentions = [("self_attn", "self_attention")]
        if stack == "decoder":
            attentions.append(("encoder_attn", "cross_attention"))
        layer = rf"model\.{stack}\.layers\.(\d+)\."
        target = f"{stack}_layers_{{0}}/"
        norms = [f"{hf}_layer_norm" for hf, _ in attentions] + ["final_layer_norm"]
        for index, hf_norm in enumerate(norms):
            for hf_param, param in norm.items():
                rules.append((rf"{layer}{hf_norm}\.{hf_param}", f"{target}norms_{index}/layer_norm/{param}",
                              "as_is"))
        for hf_attention, attention in attentions:
            for hf_proj, proj in (("q", "query"), ("k", "key"), ("v", "value")):
                prefix = rf"{layer}{hf_attention}\.{hf_proj}_proj\."
                rules.append((prefix + "weight", f"{target}{attention}/{proj}/kernel", "heads_in"))
                rules.append((prefix + "bias", f"{target}{attention}/{proj}/bias", "heads_bias"))
            prefix = rf"{layer}{hf_attention}\.out_proj\."
            rules.append((prefix + "weight", f"{target}{attention}/out/kernel", "heads_out"))
            rules.append((prefix + "bias", f"{target}{attention}/out/bias", "as_is"))
        for hf_fc, fc in (("fc1", "hidden"), ("fc2", "output")):
            rules.append((rf"{layer}{hf_fc}\.weight", f"{target}mlp/{fc}/kernel", "linear"))
            rules.append((rf"{layer}{hf_fc}\.bias", f"{target}mlp/{fc}/bias", "as_is"))
    return rules


# Older BART checkpoints lack `final_logits_bias`, which transformers then starts at zeros.
LAYOUT = TensorLayout(rules=lambda module: bart_rules(),
                      zero_if_absent={"output_bias": ("final_logits_bias", "row")})
