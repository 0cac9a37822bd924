"""Pretrained encoder-decoders from a local `save_pretrained` directory (no download, no torch).

```
model, variables = load_t5("path/to/t5-small")   # config.json + model.safetensors
logits = model.forward(variables, model.encode(variables, src), tgt_inputs)
```
`config.json` gives the `T5Config`; every tensor of `model.safetensors` (read with `safetensors`
into NumPy) is mapped by name into the flax variables, checked for shape, and transposed where
torch and flax lay a weight out differently (a torch Linear's weight is [out, in], a flax kernel
[in, out], with the attention heads split out: [d_model, heads, d_kv] and [heads, d_kv, d_model]).
A tensor that maps to nothing, a tensor of the wrong shape, or a variable no tensor fills is a
`PretrainedError` naming the tensor (or the variable) and the file.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from safetensors.flax import load_file as load_flax_file
from safetensors.numpy import load_file

from flax_s2s.errors import FileFormatError
from flax_s2s.models import Seq2Seq
from flax_s2s.models.t5 import T5, T5Config

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# Tensors that the reference implementation writes but never reads: a relative-position table in
# the first decoder layer's cross-attention, which some older T5 checkpoints carry.
_IGNORED = (r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight",)
# The embedding is shared: these all name the same matrix when present (`lm_head` only when tied).
_EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


class PretrainedError(FileFormatError):
    """A checkpoint directory that does not fit the model; the message names what and where."""


def _t5_rules(tie_output: bool) -> list[tuple[str, str, str]]:
    """(regex over the tensor name, flax path template, layout) for every T5 tensor. Layouts:
    "as_is" (same array), "linear" (transposed), "heads_in" (transposed, [d_model, heads, d_kv]),
    "heads_out" (transposed, [heads, d_kv, d_model])."""
    attention = {"q": ("query", "heads_in"), "k": ("key", "heads_in"),
                 "v": ("value", "heads_in"), "o": ("out", "heads_out")}
    rules = [(re.escape(name), "shared_embed/embedding", "as_is") for name in _EMBEDDINGS]
    if not tie_output:
        rules.append((r"lm_head\.weight", "lm_head/kernel", "linear"))
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


def _match(rules: list[tuple[re.Pattern, str, str]], name: str) -> tuple[str, str] | None:
    """(flax path, layout) of the first rule that matches the tensor name fully, or None."""
    for pattern, target, layout in rules:
        match = pattern.fullmatch(name)
        if match:
            return target.format(*match.groups()), layout
    return None


def _torch_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """The shape a tensor of `layout` has in the checkpoint for a flax variable of `shape`."""
    if layout == "as_is":
        return shape
    if layout == "heads_in":  # [d_model, heads, d_kv] <- [heads * d_kv, d_model]
        return (shape[1] * shape[2], shape[0])
    if layout == "heads_out":  # [heads, d_kv, d_model] <- [d_model, heads * d_kv]
        return (shape[2], shape[0] * shape[1])
    return tuple(reversed(shape))  # "linear"


def _to_flax(tensor: np.ndarray, shape: tuple[int, ...], layout: str) -> np.ndarray:
    """A checkpoint tensor (already checked against `_torch_shape`) as the flax variable."""
    if layout == "as_is":
        return tensor
    return tensor.T.reshape(shape)


def read_config(directory: str | pathlib.Path) -> dict[str, Any]:
    """config.json of a `save_pretrained` directory, as a dict."""
    path = pathlib.Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise PretrainedError(f"{path}: no such file (a save_pretrained directory has one)")
    return json.loads(path.read_text())


def read_tensors(directory: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Every tensor of model.safetensors as float32 NumPy arrays, by name (float16 and bfloat16
    checkpoints too: the model's parameters are float32)."""
    path = pathlib.Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise PretrainedError(f"{path}: no such file (only safetensors weights are read)")
    try:
        tensors = load_file(path)
    except TypeError:  # bfloat16 has no NumPy dtype: read through JAX's, on the host
        with jax.default_device(jax.devices("cpu")[0]):
            tensors = load_flax_file(path)
    return {name: np.asarray(value, np.float32) for name, value in tensors.items()}


def t5_variables(
    config: T5Config, tensors: dict[str, np.ndarray], source: str = WEIGHTS_FILE
) -> dict[str, Any]:
    """The flax variables of `T5(config)` from checkpoint tensors by name; `source` names the file
    in errors. Fails on a tensor no rule maps, a shape that does not fit, an embedding alias that
    differs from the shared embedding, or a variable left unfilled."""
    module = T5(config)
    tokens = jnp.zeros((1, 1), jnp.int32)
    expected = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), tokens, tokens))
    shapes = {"/".join(path): leaf.shape
              for path, leaf in flax.traverse_util.flatten_dict(expected["params"]).items()}
    rules = [(re.compile(pattern), target, layout)
             for pattern, target, layout in _t5_rules(config.tie_output)]
    if config.tie_output:  # a tied checkpoint may still write the head: the same matrix
        rules.append((re.compile(r"lm_head\.weight"), "shared_embed/embedding", "as_is"))
    filled: dict[str, tuple[str, np.ndarray]] = {}
    for name in sorted(tensors, key=lambda name: (name != _EMBEDDINGS[0], name)):  # shared first
        tensor = tensors[name]
        if any(re.fullmatch(pattern, name) for pattern in _IGNORED):
            continue
        found = _match(rules, name)
        if found is None:
            raise PretrainedError(f"{source}: tensor {name!r} {list(tensor.shape)} maps to no T5 variable "
                                  "(a checkpoint of another architecture or config?)")
        path, layout = found
        if path not in shapes:
            raise PretrainedError(f"{source}: tensor {name!r} would fill {path!r}, which a model of "
                                  "this config.json does not have (another feed_forward_proj or "
                                  "more layers?)")
        want = _torch_shape(shapes[path], layout)
        if tuple(tensor.shape) != want:
            raise PretrainedError(f"{source}: tensor {name!r} has shape {list(tensor.shape)}, but "
                                  f"config.json asks for {list(want)} (for {path!r})")
        value = _to_flax(tensor, shapes[path], layout)
        if path in filled:  # an alias of the shared embedding
            first, kept = filled[path]
            if not np.array_equal(kept, value):
                raise PretrainedError(f"{source}: tensor {name!r} differs from {first!r}, but both are "
                                      "the shared embedding")
            continue
        filled[path] = (name, value)
    missing = sorted(set(shapes) - set(filled))
    if missing:
        raise PretrainedError(f"{source}: no tensor fills the variable(s) {missing}")
    params = {path: jnp.asarray(value) for path, (_, value) in filled.items()}
    return {"params": flax.traverse_util.unflatten_dict(params, sep="/")}


def load_t5(directory: str | pathlib.Path, **overrides: Any) -> tuple[Seq2Seq, dict[str, Any]]:
    """A T5 `save_pretrained` directory (config.json + model.safetensors) -> (model, variables).

    `overrides` replace `T5Config` fields read from config.json that change no shape (dtype,
    dropout_rate, ...)."""
    config = T5Config.from_hf_config(read_config(directory), **overrides)
    source = str(pathlib.Path(directory) / WEIGHTS_FILE)
    return Seq2Seq(T5(config)), t5_variables(config, read_tensors(directory), source)
