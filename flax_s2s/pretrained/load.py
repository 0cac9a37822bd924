"""A pretrained encoder-decoder from a local `save_pretrained` directory (no download, no torch).

```
model, variables = load_pretrained("path/to/t5-small")   # config.json + model.safetensors
logits = model.forward(variables, model.encode(variables, src), tgt_inputs)
```
config.json's `model_type` picks the architecture: "t5" (`flax_s2s.models.t5`, v1.0 and v1.1 /
mT5 / ByT5 layouts), "bart", "mbart", "marian" or "pegasus" (`flax_s2s.models.bart`, `.mbart`,
`.marian`, `.pegasus`: the Transformer in each one's layout); the
model registry builds its module, and the architecture's `TensorLayout` fills it from
`model.safetensors` (read with `safetensors` into NumPy, float32).
"""

from __future__ import annotations

import pathlib
from typing import Any

import flax.linen as nn

from flax_s2s.hf_files import CONFIG_FILE, WEIGHTS_FILE, PretrainedError, architecture, read_config
from flax_s2s.models import Seq2Seq, module_from_hf_config
from flax_s2s.pretrained import bart, marian, mbart, pegasus, t5
from flax_s2s.pretrained.rules import TensorLayout, fill, read_tensors, variable_shapes

# config.json's model_type -> its checkpoint layout
LAYOUTS: dict[str, TensorLayout] = {"t5": t5.LAYOUT, "bart": bart.LAYOUT, "mbart": mbart.LAYOUT,
                                     "marian": marian.LAYOUT, "pegasus": pegasus.LAYOUT}


def pretrained_module(directory: str | pathlib.Path, **overrides: Any) -> nn.Module:
    """The linen module a `save_pretrained` directory's config.json describes (T5 or BART);
    `overrides` replace config fields that change no shape (dtype, dropout_rate, ...)."""
    hf = read_config(directory)
    architecture(hf, directory)
    try:
        return module_from_hf_config(hf, **overrides)
    except (KeyError, TypeError, ValueError) as error:
        raise PretrainedError(f"{pathlib.Path(directory) / CONFIG_FILE}: {error}") from None


def load_variables(directory: str | pathlib.Path, module: nn.Module) -> dict[str, Any]:
    """The variables of `module` (built from the directory's config.json, perhaps with other
    dtype or dropout) from the directory's model.safetensors."""
    hf = read_config(directory)
    layout = LAYOUTS[architecture(hf, directory)]
    source = str(pathlib.Path(directory) / WEIGHTS_FILE)
    return fill(layout.rules(module), variable_shapes(module), read_tensors(directory), source,
                hf["model_type"].upper(), layout.ignored, layout.zero_if_absent,
                lambda name: layout.computed(module, name))


def load_pretrained(directory: str | pathlib.Path, **overrides: Any) -> tuple[Seq2Seq, dict[str, Any]]:
    """A T5 or BART `save_pretrained` directory (config.json + model.safetensors) -> (model,
    variables). `overrides` as in `pretrained_module`."""
    module = pretrained_module(directory, **overrides)
    return Seq2Seq(module), load_variables(directory, module)


def load_t5(directory: str | pathlib.Path, **overrides: Any) -> tuple[Seq2Seq, dict[str, Any]]:
    """`load_pretrained` for a directory that must hold a T5."""
    return _load_kind(directory, "t5", overrides)


def load_bart(directory: str | pathlib.Path, **overrides: Any) -> tuple[Seq2Seq, dict[str, Any]]:
    """`load_pretrained` for a directory that must hold a BART."""
    return _load_kind(directory, "bart", overrides)


def _load_kind(directory: str | pathlib.Path, kind: str, overrides: dict[str, Any]):
    found = read_config(directory).get("model_type")
    if found != kind:
        raise PretrainedError(f"{pathlib.Path(directory) / CONFIG_FILE}: model_type {found!r}, "
                              f"expected {kind!r}")
    return load_pretrained(directory, **overrides)
