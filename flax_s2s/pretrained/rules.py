"""Checkpoint tensors into flax variables and back, by tables of rules.

A rule maps a tensor name (a regex over `model.safetensors`'s names) to a flax variable path and
a layout; `fill` applies an architecture's rules to a checkpoint's tensors, `to_tensors` runs
them backwards for export. The layouts say how torch and flax lay a weight out: a torch Linear's
weight is [out, in], a flax kernel [in, out], with the attention heads split out ([d_model,
heads, d_kv] and [heads, d_kv, d_model]). A tensor that maps to nothing, a tensor of the wrong
shape, or a variable no tensor fills is a `PretrainedError` naming the tensor (or the variable)
and the file.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.flax import load_file as load_flax_file
from safetensors.numpy import load_file

from flax_s2s.hf_files import WEIGHTS_FILE, PretrainedError

Rule = tuple[str, str, str]  # (regex over the tensor name, flax path template, layout)


@dataclasses.dataclass(frozen=True)
class TensorLayout:
    """One architecture's checkpoint layout.

    rules: (module) -> the rules of every tensor of a module of this architecture.
    ignored: regexes of tensors the reference writes but never reads.
    zero_if_absent: {flax path: (tensor name, layout)} of variables that are zeros where a
      checkpoint holds no tensor for them (the reference starts them at zeros), and that export
      writes even where the reference directory lacks them.
    computed: (module, tensor name) -> the value of a tensor the model computes rather than
      stores (Marian's sinusoidal tables), None for any other name. A checkpoint's tensor of
      that name must hold that value (to `COMPUTED_TOLERANCE`); export writes it.
    """

    rules: Callable[[Any], list[Rule]]
    ignored: tuple[str, ...] = ()
    zero_if_absent: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    computed: Callable[[Any, str], np.ndarray | None] = lambda module, name: None


COMPUTED_TOLERANCE = 1e-2  # a float16 or bfloat16 copy of a computed table still passes


_TRANSPOSED = ("linear", "heads_in", "heads_out")


def match(rules: list[tuple[re.Pattern, str, str]], name: str) -> tuple[str, str] | None:
    """(flax path, layout) of the first rule that matches the tensor name fully, or None."""
    for pattern, target, layout in rules:
        match = pattern.fullmatch(name)
        if match:
            return target.format(*match.groups()), layout
    return None


def rule_index(rules: list[tuple[re.Pattern, str, str]], name: str) -> int:
    """The index of the first rule that matches the tensor name (len(rules) for none)."""
    return next((i for i, (pattern, _, _) in enumerate(rules) if pattern.fullmatch(name)), len(rules))


def torch_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
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


def to_flax(tensor: np.ndarray, shape: tuple[int, ...], layout: str) -> np.ndarray:
    """A checkpoint tensor (already checked against `torch_shape`) as the flax variable."""
    if layout in _TRANSPOSED:
        return tensor.T.reshape(shape)
    return tensor.reshape(shape)


def to_torch(value: np.ndarray, layout: str) -> np.ndarray:
    """A flax variable as the checkpoint tensor of `layout` (`to_flax` backwards)."""
    shape = torch_shape(value.shape, layout)
    if layout in _TRANSPOSED:
        return np.ascontiguousarray(value.reshape(tuple(reversed(shape))).T)
    return value.reshape(shape)


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


def tensor_names(directory: str | pathlib.Path) -> list[str]:
    """The tensor names of a directory's model.safetensors (its header only)."""
    path = pathlib.Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise PretrainedError(f"{path}: no such file (only safetensors weights are read)")
    with safe_open(path, "numpy") as weights:
        return list(weights.keys())


def variable_shapes(module: Any) -> dict[str, tuple[int, ...]]:
    """Every parameter's shape by "/"-joined path, from an abstract init of `module`."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    expected = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), tokens, tokens))
    return {"/".join(path): leaf.shape
            for path, leaf in flax.traverse_util.flatten_dict(expected["params"]).items()}


def fill(
    rules: list[Rule],
    shapes: dict[str, tuple[int, ...]],
    tensors: dict[str, np.ndarray],
    source: str,
    architecture: str,
    ignored: tuple[str, ...] = (),
    zero_if_absent: dict[str, tuple[str, str]] | None = None,
    computed: Callable[[str], np.ndarray | None] | None = None,
) -> dict[str, Any]:
    """The variables {"params": ...} that `tensors` fill through `rules`. Fails on a tensor no
    rule maps, a shape that does not fit, two aliases of one variable that differ, a tensor the
    model computes (`computed`: name -> its value or None) holding another value, or a variable
    left unfilled (but those of `zero_if_absent`, which the reference initialises to zeros when
    a checkpoint lacks them); `source` names the file in errors."""
    compiled = [(re.compile(pattern), target, layout) for pattern, target, layout in rules]
    filled: dict[str, tuple[str, np.ndarray]] = {}
    # in the order of the rules, so that an alias is checked against the first-named matrix
    for name in sorted(tensors, key=lambda name: (rule_index(compiled, name), name)):
        tensor = tensors[name]
        if any(re.fullmatch(pattern, name) for pattern in ignored):
            continue
        expected = computed(name) if computed else None
        if expected is not None:
            check_computed(tensor, expected, name, source)
            continue
        found = match(compiled, name)
        if found is None:
            raise PretrainedError(f"{source}: tensor {name!r} {list(tensor.shape)} maps to no "
                                  f"{architecture} variable (a checkpoint of another architecture "
                                  "or config?)")
        path, layout = found
        if path not in shapes:
            raise PretrainedError(f"{source}: tensor {name!r} would fill {path!r}, which a model of "
                                  "this config.json does not have (another feed_forward_proj or "
                                  "more layers?)")
        want = torch_shape(shapes[path], layout)
        if tuple(tensor.shape) != want:
            raise PretrainedError(f"{source}: tensor {name!r} has shape {list(tensor.shape)}, but "
                                  f"config.json asks for {list(want)} (for {path!r})")
        value = to_flax(tensor, shapes[path], layout)
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


def check_computed(tensor: np.ndarray, expected: np.ndarray, name: str, source: str) -> None:
    """Fails unless a stored tensor holds what the model computes in its place."""
    if tensor.shape != expected.shape:
        raise PretrainedError(f"{source}: tensor {name!r} has shape {list(tensor.shape)}, but the "
                              f"model computes it as {list(expected.shape)} from config.json")
    differ = np.abs(tensor - expected).max(initial=0.0)
    if differ > COMPUTED_TOLERANCE:
        raise PretrainedError(f"{source}: tensor {name!r} differs from the table the model computes "
                              f"in its place by {differ:.3g} (another layout of the positions?)")


def to_tensors(
    layout: TensorLayout, module: Any, params: dict[str, np.ndarray], names: list[str], source: str
) -> dict[str, np.ndarray]:
    """`fill` backwards: the checkpoint tensors of `names` (the reference's tensor names) from
    flax `params` by "/"-joined path, each in its checkpoint layout; `source` names the reference
    file in errors."""
    compiled = [(re.compile(pattern), target, kind) for pattern, target, kind in layout.rules(module)]
    tensors = {}
    for name in names:
        if any(re.fullmatch(pattern, name) for pattern in layout.ignored):
            continue
        value = layout.computed(module, name)
        if value is not None:
            tensors[name] = np.asarray(value, np.float32)
            continue
        found = match(compiled, name)
        if found is None or found[0] not in params:
            raise PretrainedError(f"{source}: tensor {name!r} has no variable to export from")
        path, kind = found
        tensors[name] = to_torch(params[path], kind)
    for path, (name, kind) in layout.zero_if_absent.items():  # even where the reference lacks it
        if path in params and name not in tensors:
            tensors[name] = to_torch(params[path], kind)
    return tensors
