"""PEGASUS's tensor rules (`PegasusForConditionalGeneration`'s names) into the Transformer in
PEGASUS's layout (`flax_s2s.models.pegasus`): Marian's with one embedding, plus the final norm
of each stack (`model.{encoder,decoder}.layer_norm`)."""

from __future__ import annotations

from typing import Any

from flax_s2s.pretrained.marian import ZERO_BIAS, layer_rules, output_rules, position_table
from flax_s2s.pretrained.rules import Rule, TensorLayout


def pegasus_rules(module: Any) -> list[Rule]:
    """The rules of every PEGASUS tensor into the Transformer `module` in PEGASUS's layout."""
    rules = output_rules(module.config) + layer_rules()
    for stack in ("encoder", "decoder"):
        for hf_param, param in (("weight", "scale"), ("bias", "bias")):
            rules.append((rf"model\.{stack}\.layer_norm\.{hf_param}", f"{stack}_norm/layer_norm/{param}",
                          "as_is"))
    return rules


LAYOUT = TensorLayout(rules=pegasus_rules, zero_if_absent=ZERO_BIAS, computed=position_table)
