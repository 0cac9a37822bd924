"""T5's tensor rules (`T5ForConditionalGeneration`'s names, v1.0 and v1.1 / mT5 / ByT5 layouts)
into `flax_s2s.models.t5.T5`."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from flax_s2s.hf_files import WEIGHTS_FILE
from flax_s2s.models.t5 import T5, T5Config
from flax_s2s.pretrained.rules import Rule, TensorLayout, fill, variable_shapes

# Tensors that the reference implementation writes but never reads: a relative-position table in
# the first decoder layer's cross-attention, which some older T5 checkpoints carry.
T5_IGNORED = (r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight",)


# The embedding is shared: these all name the same matrix when present (`lm_head` only when tied).
T5_EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def t5_rules(tie_output: bool) -> list[Rule]:
    """The rules of every T5 tensor. Layouts: "as_is" (same array), "linear" (transposed),
    "heads_in" (transposed, [d_model, heads, d_kv]), "heads_out" (transposed, [heads, d_kv,
    d_model])."""
    attention = {"q": ("query", "heads_in"), "k": ("key", "heads_in"),
                 "v": ("value", "heads_in"), "o": ("out", "heads_out")}
    rules = [(re.escape(name), "shared_embed/embedding", "as_is") for name in T5_EMBEDDINGS]
    # a tied checkpoint may still write the head: the shared matrix again
    rules.append((r"lm_head\.weight", "shared_embed/embedding" if tie_output else "lm_head/kernel",
                  "as_is" if tie_output else "linear"))
    for stack, sublayers in (
        ("encoder", (("SelfAttention", "self_attention"), ("DenseReluDense", "mlp"))),
        ("decoder", (("SelfAttention", "self_attention"), ("EncDecAttention", "cross_attention"),
                     ("DenseReluDense", "mlp"))),
    ):
        block = rf"{stack}\.block\.(\d+)\.layer\."
        for index, (hf_name, name) in enumerate(sublayers):
            rules.append((rf"{block}{index}\.layer_norm\.weight", f"{stack}_layers_{{0}}/{name}_norm/scale",
                          "as_is"))
            if hf_name == "DenseReluDense":
                rules.append((rf"{block}{index}\.DenseReluDense\.(wi|wi_0|wi_1|wo)\.weight",
                              f"{stack}_layers_{{0}}/mlp/{{1}}/kernel", "linear"))
            else:
                for hf_proj, (proj, layout) in attention.items():
                    rules.append((rf"{block}{index}\.{hf_name}\.{hf_proj}\.weight",
                                  f"{stack}_layers_{{0}}/{name}/{proj}/kernel", layout))
        rules.append((rf"{stack}\.block\.0\.layer\.0\.SelfAttention\.relative_attention_bias\.weight",
                      f"{stack}_bias/embedding", "as_is"))
        rules.append((rf"{stack}\.final_layer_norm\.weight", f"{stack}_norm/scale", "as_is"))
    return rules


def t5_variables(
    config: T5Config, tensors: dict[str, np.ndarray], source: str = WEIGHTS_FILE
) -> dict[str, Any]:
    """The flax variables of `T5(config)` from checkpoint tensors by name; `source` names the file
    in errors (see `rules.fill`)."""
    return fill(t5_rules(config.tie_output), variable_shapes(T5(config)), tensors, source, "T5",
                 T5_IGNORED)


LAYOUT = TensorLayout(rules=lambda module: t5_rules(module.config.tie_output), ignored=T5_IGNORED)
