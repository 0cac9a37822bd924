"""Marian's tensor rules (`MarianMTModel`'s names) into the Transformer in Marian's layout
(`flax_s2s.models.marian`); PEGASUS's (`flax_s2s.pretrained.pegasus`) build on them.

The sinusoidal position tables (`model.{encoder,decoder}.embed_positions.weight`) are no
variables: the model computes them (`marian_sinusoids`). Where a checkpoint stores them they
must hold that table (a checkpoint with other positions is refused), and export writes it.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from flax_s2s.models.transformer_layers import marian_sinusoids
from flax_s2s.pretrained.bart import bart_rules
from flax_s2s.pretrained.rules import Rule, TensorLayout

POSITION_TABLES = r"model\.(encoder|decoder)\.embed_positions\.weight"


def layer_rules() -> list[Rule]:
    """The rules of every encoder and decoder layer's tensors: BART's names and layouts."""
    return [rule for rule in bart_rules() if r"\.layers\." in rule[0]]


def output_rules(config: Any) -> list[Rule]:
    """Token embeddings, output and `final_logits_bias` of a Transformer of `config`: one
    embedding for all (share_embeddings), or the encoder's and the decoder's own; the output
    reads the target embedding (tie_output) or has its own kernel, whose bias is the logits
    bias."""
    target = "src_embed/embedding" if config.share_embeddings else "tgt_embed/embedding"
    rules = [(r"model\.shared\.weight", "src_embed/embedding", "as_is"),
             (r"model\.encoder\.embed_tokens\.weight", "src_embed/embedding", "as_is"),
             (r"model\.decoder\.embed_tokens\.weight", target, "as_is")]
    if config.tie_output:
        return rules + [(r"lm_head\.weight", target, "as_is"),
                        (r"final_logits_bias", "output_bias", "row")]
    return rules + [(r"lm_head\.weight", "output_proj/kernel", "linear"),
                    (r"final_logits_bias", "output_proj/bias", "row")]


def marian_rules(module: Any) -> list[Rule]:
    """The rules of every Marian tensor into the Transformer `module` in Marian's layout."""
    return output_rules(module.config) + layer_rules()


def position_table(module: Any, name: str) -> np.ndarray | None:
    """The sinusoidal table [max_positions, d_model] a position tensor's name stands for, or
    None for any other tensor."""
    if re.fullmatch(POSITION_TABLES, name) is None:
        return None
    return marian_sinusoids(module.config.max_positions, module.config.d_model)


# `final_logits_bias` is a buffer that transformers starts at zeros where a checkpoint lacks it.
ZERO_BIAS = {"output_bias": ("final_logits_bias", "row"),
             "output_proj/bias": ("final_logits_bias", "row")}
LAYOUT = TensorLayout(rules=marian_rules, zero_if_absent=ZERO_BIAS, computed=position_table)
