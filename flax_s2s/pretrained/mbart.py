"""mBART's tensor rules (`MBartForConditionalGeneration`'s names) into the Transformer in
mBART's layout (`flax_s2s.models.mbart`): BART's, plus each stack's final LayerNorm."""

from __future__ import annotations

from flax_s2s.pretrained.bart import bart_rules
from flax_s2s.pretrained.rules import Rule, TensorLayout


def mbart_rules() -> list[Rule]:
    """BART's rules (the same names, the same layouts) and `model.{encoder,decoder}.layer_norm`,
    the final norm of each pre-norm stack."""
    rules = bart_rules()
    for stack in ("encoder", "decoder"):
        for hf_param, param in (("weight", "scale"), ("bias", "bias")):
            rules.append((rf"model\.{stack}\.layer_norm\.{hf_param}",
                          f"{stack}_norm/layer_norm/{param}", "as_is"))
    return rules


LAYOUT = TensorLayout(rules=lambda module: mbart_rules(),
                      zero_if_absent={"output_bias": ("final_logits_bias", "row")})
