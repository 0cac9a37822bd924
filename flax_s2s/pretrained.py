"""Pretrained encoder-decoders from a local `save_pretrained` directory (no download, no torch),
and back.

```
model, variables = load_pretrained("path/to/t5-small")   # config.json + model.safetensors
logits = model.forward(variables, model.encode(variables, src), tgt_inputs)
export_pretrained(variables, "path/to/t5-small", "path/to/fine-tuned")   # loads in transformers
```
config.json's `model_type` picks the architecture: "t5" (`flax_s2s.models.t5`, v1.0 and v1.1 /
mT5 / ByT5 layouts) or "bart" (`flax_s2s.models.bart`: the Transformer in BART's layout). Every
tensor of `model.safetensors` (read with `safetensors` into NumPy) is mapped by name into the
flax variables by a table of rules, checked for shape, and transposed or reshaped where torch
and flax lay a weight out differently (a torch Linear's weight is [out, in], a flax kernel
[in, out], with the attention heads split out: [d_model, heads, d_kv] and [heads, d_kv,
d_model]). A tensor that maps to nothing, a tensor of the wrong shape, or a variable no tensor
fills is a `PretrainedError` naming the tensor (or the variable) and the file.

Export runs the same rules backwards over the tensor names of the directory the model came
from, so what it writes has the reference's names, shapes and layout (float32).
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.flax import load_file as load_flax_file
from safetensors.numpy import load_file, save_file

from flax_s2s.data.vocab import ByteVocab, SentencePieceVocab, TokenizerVocab, Vocab
from flax_s2s.errors import FileFormatError
from flax_s2s.models import Seq2Seq, module_from_hf_config
from flax_s2s.models.t5 import T5, T5Config

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# What a save_pretrained directory may hold beside the weights: copied as they are on export.
TOKENIZER_FILES = ("spiece.model", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                   "merges.txt", "special_tokens_map.json", "generation_config.json")

# Tensors that the reference implementation writes but never reads: a relative-position table in
# the first decoder layer's cross-attention, which some older T5 checkpoints carry.
_T5_IGNORED = (r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight",)
# The embedding is shared: these all name the same matrix when present (`lm_head` only when tied).
_T5_EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
_BART_EMBEDDINGS = ("model.shared.weight", "model.encoder.embed_tokens.weight",
                    "model.decoder.embed_tokens.weight", "lm_head.weight")

Rule = tuple[str, str, str]  # (regex over the tensor name, flax path template, layout)


class PretrainedError(FileFormatError):
    """A checkpoint directory that does not fit the model; the message names what and where."""


def _t5_rules(tie_output: bool) -> list[Rule]:
    """The rules of every T5 tensor. Layouts: "as_is" (same array), "linear" (transposed),
    "heads_in" (transposed, [d_model, heads, d_kv]), "heads_out" (transposed, [heads, d_kv,
    d_model])."""
    attention = {"q": ("query", "heads_in"), "k": ("key", "heads_in"),
                 "v": ("value", "heads_in"), "o": ("out", "heads_out")}
    rules = [(re.escape(name), "shared_embed/embedding", "as_is") for name in _T5_EMBEDDINGS]
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


def _bart_rules() -> list[Rule]:
    """The rules of every BART tensor (`BartForConditionalGeneration`'s names) into the
    Transformer in BART's layout. Layouts as T5's, plus "heads_bias" ([heads * d_kv] ->
    [heads, d_kv]) and "row" ([1, vocab] -> [vocab], `final_logits_bias`)."""
    rules = [(re.escape(name), "src_embed/embedding", "as_is") for name in _BART_EMBEDDINGS]
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


_TRANSPOSED = ("linear", "heads_in", "heads_out")


def _match(rules: list[tuple[re.Pattern, str, str]], name: str) -> tuple[str, str] | None:
    """(flax path, layout) of the first rule that matches the tensor name fully, or None."""
    for pattern, target, layout in rules:
        match = pattern.fullmatch(name)
        if match:
            return target.format(*match.groups()), layout
    return None


def _rule_index(rules: list[tuple[re.Pattern, str, str]], name: str) -> int:
    """The index of the first rule that matches the tensor name (len(rules) for none)."""
    return next((i for i, (pattern, _, _) in enumerate(rules) if pattern.fullmatch(name)), len(rules))


def _torch_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """The shape a tensor of `layout` has in the checkpoint for a flax variable of `shape`."""
    if layout == "as_is":
        return shape
    if layout == "heads_in":  # [d_model, heads, d_kv] <- [heads * d_kv, d_model]
        return (shape[1] * shape[2], shape[0])
    if layout == "heads_out":  # [heads, d_kv, d_model] <- [d_model, heads * d_kv]
        return (shape[2], shape[0] * shape[1])
    if layout == "heads_bias":  # [heads, d_kv] <- [heads * d_kv]
        return (shape[0] * shape[1],)
    if layout == "row":  # [vocab] <- [1, vocab]
        return (1, *shape)
    return tuple(reversed(shape))  # "linear"


def _to_flax(tensor: np.ndarray, shape: tuple[int, ...], layout: str) -> np.ndarray:
    """A checkpoint tensor (already checked against `_torch_shape`) as the flax variable."""
    if layout in _TRANSPOSED:
        return tensor.T.reshape(shape)
    return tensor.reshape(shape)


def _to_torch(value: np.ndarray, layout: str) -> np.ndarray:
    """A flax variable as the checkpoint tensor of `layout` (`_to_flax` backwards)."""
    shape = _torch_shape(value.shape, layout)
    if layout in _TRANSPOSED:
        return np.ascontiguousarray(value.reshape(tuple(reversed(shape))).T)
    return value.reshape(shape)


def read_config(directory: str | pathlib.Path) -> dict[str, Any]:
    """config.json of a `save_pretrained` directory, as a dict."""
    path = pathlib.Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise PretrainedError(f"{path}: no such file (a save_pretrained directory has one)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PretrainedError(f"{path}: not a JSON config ({error})") from None
    if not isinstance(config, dict):
        raise PretrainedError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


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
    except Exception as error:  # safetensors raises its own error types for a damaged file
        raise PretrainedError(f"{path}: not a safetensors file ({error})") from None
    return {name: np.asarray(value, np.float32) for name, value in tensors.items()}


def _variable_shapes(module: Any) -> dict[str, tuple[int, ...]]:
    """Every parameter's shape by "/"-joined path, from an abstract init of `module`."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    expected = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), tokens, tokens))
    return {"/".join(path): leaf.shape
            for path, leaf in flax.traverse_util.flatten_dict(expected["params"]).items()}


def _fill(
    rules: list[Rule],
    shapes: dict[str, tuple[int, ...]],
    tensors: dict[str, np.ndarray],
    source: str,
    architecture: str,
    ignored: tuple[str, ...] = (),
    zero_if_absent: dict[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """The variables {"params": ...} that `tensors` fill through `rules`. Fails on a tensor no
    rule maps, a shape that does not fit, two aliases of one variable that differ, or a
    variable left unfilled (but those of `zero_if_absent`, which the reference initialises to
    zeros when a checkpoint lacks them); `source` names the file in errors."""
    compiled = [(re.compile(pattern), target, layout) for pattern, target, layout in rules]
    filled: dict[str, tuple[str, np.ndarray]] = {}
    # in the order of the rules, so that an alias is checked against the first-named matrix
    for name in sorted(tensors, key=lambda name: (_rule_index(compiled, name), name)):
        tensor = tensors[name]
        if any(re.fullmatch(pattern, name) for pattern in ignored):
            continue
        found = _match(compiled, name)
        if found is None:
            raise PretrainedError(f"{source}: tensor {name!r} {list(tensor.shape)} maps to no "
                                  f"{architecture} variable (a checkpoint of another architecture "
                                  "or config?)")
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
        if path in filled:  # an alias of a shared matrix (the embedding)
            first, kept = filled[path]
            if not np.array_equal(kept, value):
                raise PretrainedError(f"{source}: tensor {name!r} differs from {first!r}, but both "
                                      f"are {path!r}")
            continue
        filled[path] = (name, value)
    for path in zero_if_absent or {}:
        if path in shapes and path not in filled:
            filled[path] = ("zeros", np.zeros(shapes[path], np.float32))
    missing = sorted(set(shapes) - set(filled))
    if missing:
        raise PretrainedError(f"{source}: no tensor fills the variable(s) {missing}")
    params = {path: jnp.asarray(value) for path, (_, value) in filled.items()}
    return {"params": flax.traverse_util.unflatten_dict(params, sep="/")}


def t5_variables(
    config: T5Config, tensors: dict[str, np.ndarray], source: str = WEIGHTS_FILE
) -> dict[str, Any]:
    """The flax variables of `T5(config)` from checkpoint tensors by name; `source` names the file
    in errors (see `_fill`)."""
    return _fill(_t5_rules(config.tie_output), _variable_shapes(T5(config)), tensors, source, "T5",
                 _T5_IGNORED)


def _architecture(hf: dict[str, Any], directory: str | pathlib.Path) -> str:
    """config.json's model_type, when it is one this module loads."""
    kind = hf.get("model_type")
    if kind not in _ARCHITECTURES:
        raise PretrainedError(f"{pathlib.Path(directory) / CONFIG_FILE}: model_type {kind!r} is not "
                              f"one of {list(_ARCHITECTURES)}")
    return kind


# config.json's model_type -> (the rules of its module's tensors, tensors it may hold unread,
# variables that are zeros when it holds no tensor for them: older BART checkpoints lack
# `final_logits_bias`, which transformers then starts at zeros)
_ARCHITECTURES: dict[str, tuple[Callable[[Any], list[Rule]], tuple[str, ...],
                                dict[str, tuple[str, str]]]] = {
    "t5": (lambda module: _t5_rules(module.config.tie_output), _T5_IGNORED, {}),
    "bart": (lambda module: _bart_rules(), (), {"output_bias": ("final_logits_bias", "row")}),
}


def pretrained_module(directory: str | pathlib.Path, **overrides: Any) -> Any:
    """The linen module a `save_pretrained` directory's config.json describes (T5 or BART);
    `overrides` replace config fields that change no shape (dtype, dropout_rate, ...)."""
    hf = read_config(directory)
    _architecture(hf, directory)
    try:
        return module_from_hf_config(hf, **overrides)
    except (KeyError, TypeError, ValueError) as error:
        raise PretrainedError(f"{pathlib.Path(directory) / CONFIG_FILE}: {error}") from None


def load_variables(directory: str | pathlib.Path, module: Any) -> dict[str, Any]:
    """The variables of `module` (built from the directory's config.json, perhaps with other
    dtype or dropout) from the directory's model.safetensors."""
    hf = read_config(directory)
    rules, ignored, zero_if_absent = _ARCHITECTURES[_architecture(hf, directory)]
    source = str(pathlib.Path(directory) / WEIGHTS_FILE)
    return _fill(rules(module), _variable_shapes(module), read_tensors(directory), source,
                 hf["model_type"].upper(), ignored, zero_if_absent)


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


def tensor_names(directory: str | pathlib.Path) -> list[str]:
    """The tensor names of a directory's model.safetensors (its header only)."""
    path = pathlib.Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise PretrainedError(f"{path}: no such file (only safetensors weights are read)")
    with safe_open(path, "numpy") as weights:
        return list(weights.keys())


def export_pretrained(
    variables: dict[str, Any], reference: str | pathlib.Path, out: str | pathlib.Path
) -> pathlib.Path:
    """Writes `variables` (of the model `reference`'s config.json describes, e.g. fine-tuned from
    it) as a `save_pretrained` directory `out`: config.json and the tokenizer files copied from
    `reference`, and a model.safetensors (float32) with every tensor name of `reference`'s, each
    in the reference's layout. Written to a temporary directory first and renamed into place."""
    reference, out = pathlib.Path(reference), pathlib.Path(out)
    hf = read_config(reference)
    module = pretrained_module(reference)
    rules, ignored, zero_if_absent = _ARCHITECTURES[_architecture(hf, reference)]
    compiled = [(re.compile(pattern), target, layout) for pattern, target, layout in rules(module)]
    params = {"/".join(path): np.asarray(value, np.float32)
              for path, value in flax.traverse_util.flatten_dict(variables["params"]).items()}
    tensors = {}
    for name in tensor_names(reference):
        if any(re.fullmatch(pattern, name) for pattern in ignored):
            continue
        found = _match(compiled, name)
        if found is None or found[0] not in params:
            raise PretrainedError(f"{reference / WEIGHTS_FILE}: tensor {name!r} has no variable to "
                                  "export from")
        path, layout = found
        tensors[name] = _to_torch(params[path], layout)
    for path, (name, layout) in zero_if_absent.items():  # written even where the reference lacks it
        if path in params and name not in tensors:
            tensors[name] = _to_torch(params[path], layout)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for file in (CONFIG_FILE, *TOKENIZER_FILES):
        if (reference / file).is_file():
            shutil.copy2(reference / file, partial / file)
    save_file(tensors, partial / WEIGHTS_FILE, metadata={"format": "pt"})
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return out


# --- fine-tuning: a run's config, vocabulary and first weights from a pretrained directory ---

DROPOUT_FROM_CHECKPOINT = -1.0  # config.model.dropout_rate: take config.json's


def configure(config: Any) -> None:
    """Fills a run's config from `config.pretrained` (a save_pretrained directory), in place:
    `model.type` and `model.pretrained_config` (config.json's text, which is all a saved config
    needs to rebuild the model) from its config.json, `model.dropout_rate` from its dropout when
    it is DROPOUT_FROM_CHECKPOINT, `vocab.type` "pretrained" (its tokenizer) and
    `vocab.src_eos` (sources end in </s>, as the checkpoint read them). Nothing when
    `config.pretrained` is empty. Idempotent."""
    if not config.get("pretrained"):
        return
    directory = pathlib.Path(config.pretrained)
    hf = read_config(directory)
    kind = _architecture(hf, directory)
    config.model.type = kind
    config.model.pretrained_config = json.dumps(hf, sort_keys=True)
    if config.model.dropout_rate == DROPOUT_FROM_CHECKPOINT:
        config.model.dropout_rate = float(hf.get("dropout_rate" if kind == "t5" else "dropout", 0.1))
    config.vocab.type = "pretrained"
    config.vocab.src_eos = True  # T5's and BART's tokenizers end every text with </s>


def _tokenizer_class(directory: pathlib.Path) -> str:
    """tokenizer_config.json's `tokenizer_class`, or "" without one."""
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return ""
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("tokenizer_class", ""))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise PretrainedError(f"{path}: not a JSON object ({error})") from None


def tokenizer_vocab(directory: str | pathlib.Path) -> Vocab:
    """The vocabulary of a save_pretrained directory: ByT5's bytes (its tokenizer_config.json
    names ByT5Tokenizer), T5's `spiece.model` (SentencePiece), else a `tokenizer.json` (BART's
    byte-level BPE), with the special ids of its config.json; BART's texts start with `<s>`
    (config.json's bos_token_id), as its tokenizer writes them."""
    directory = pathlib.Path(directory)
    hf = read_config(directory)
    specials = pretrained_module(directory).special_tokens
    if _tokenizer_class(directory) == "ByT5Tokenizer":  # bytes: no vocabulary file
        vocab = ByteVocab()
    elif (directory / "spiece.model").is_file():
        vocab = SentencePieceVocab.load(directory / "spiece.model")
    elif (directory / "tokenizer.json").is_file():
        prefix = [hf["bos_token_id"]] if hf.get("model_type") == "bart" and "bos_token_id" in hf else []
        vocab = TokenizerVocab((directory / "tokenizer.json").read_text(encoding="utf-8"), specials, prefix)
    else:
        raise PretrainedError(f"{directory}: no tokenizer (spiece.model, tokenizer.json, or a "
                              "tokenizer_config.json naming ByT5Tokenizer)")
    if vocab.special_tokens != specials:
        raise PretrainedError(f"{directory}: the tokenizer's special tokens {vocab.special_tokens} are "
                              f"not config.json's {specials}")
    return vocab


def export_workdir(workdir: str, out: str, reference: str = "", step: int | None = None) -> pathlib.Path:
    """Exports a fine-tuned workdir's checkpoint (default: the newest readable one) as a
    save_pretrained directory `out`, in the layout of `reference` (default: the run's
    `config.pretrained`)."""
    from flax_s2s.workdirs import load_workdir  # imports training's modules: only for the CLI

    trained = load_workdir(workdir, step)
    reference = reference or trained.config.get("pretrained", "")
    if not reference:
        raise PretrainedError(f"{workdir}: not a fine-tuned run (its config.pretrained is empty); "
                              "pass --reference=DIR, a save_pretrained directory of this model")
    if not pathlib.Path(reference).is_dir():
        raise PretrainedError(f"{reference}: no such directory (the checkpoint this run was "
                              "fine-tuned from, whose names and layout the export follows; pass "
                              "--reference=DIR)")
    return export_pretrained(trained.variables, reference, out)


def main(argv: list[str] | None = None) -> None:
    """`python -m flax_s2s.pretrained --workdir DIR --out OUT [--reference REF] [--step N]`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m flax_s2s.pretrained",
        description="Export a fine-tuned workdir as a Hugging Face save_pretrained directory.")
    parser.add_argument("--workdir", required=True, help="a run fine-tuned from config.pretrained")
    parser.add_argument("--out", required=True, help="the directory to write (replaced if present)")
    parser.add_argument("--reference", default="", help="the pretrained directory whose layout to "
                        "follow (default: the run's config.pretrained)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    args = parser.parse_args(argv)
    from flax_s2s.workdirs import WorkdirError

    try:
        out = export_workdir(args.workdir, args.out, args.reference, args.step)
    except (FileFormatError, WorkdirError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
