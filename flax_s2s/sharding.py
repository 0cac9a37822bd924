"""Devices: the mesh, where each parameter lives on it, batches as global arrays, and joining
several processes into one JAX runtime.

flax_s2s runs on JAX's SPMD machinery (`jax.jit` with `NamedSharding`s, the pjit model): one
program for the whole mesh, compiled by XLA's GSPMD partitioner. The mesh is built by
`jax.make_mesh` (topology-aware device order) with both axes of type `AxisType.Auto`: we annotate
the inputs and outputs of each jitted function (parameters, optimizer state, batch) and GSPMD
propagates shardings to every intermediate and inserts the collectives. (The default `Explicit`
axes would instead require an out_sharding on every contraction over a sharded dimension.)

Mesh axes:
  data:  the batch is split over it (data parallelism); with `fsdp`, parameters too.
  model: vocabulary, attention heads and Transformer MLP hidden units are split over it.

Parameters are sharded by a rule table, so the models carry no sharding code: `PARAM_RULES` maps a
parameter's path and rank to logical axis names, `LOGICAL_AXIS_RULES` maps logical names to mesh
axes (through flax's `nn.logical_to_mesh_axes`, the same rules `nn.with_logical_partitioning`
uses). A parameter no rule matches is replicated; so is a dimension its mesh axis does not divide.
The recurrent cells of the LSTM stay replicated on purpose: each time step is a small matmul inside
a sequential scan, and splitting it would add a collective per step.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from flax_s2s.errors import ConfigError

DATA, MODEL = "data", "model"

# (regex over the "/"-joined parameter path, logical names of its dimensions). A rule applies when
# the regex matches and the parameter has as many dimensions as names; the first such rule wins.
# The Transformer rules cover the usual flax names (DenseGeneral kernels [embed, heads, head_dim]
# for query/key/value, [heads, head_dim, embed] for the output, MLP in/out Dense kernels); they
# simply match nothing in a model that has no such parameters.
PARAM_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # token embeddings [vocab, embed] and the output projection [embed, vocab]
    (r"(^|/)(src_|tgt_|shared_|token_)?embed(ding)?/embedding$", ("vocab", "embed")),
    (r"(^|/)(output_proj|logits_dense|lm_head)/kernel$", ("embed", "vocab")),
    (r"(^|/)(output_proj|logits_dense|lm_head)/bias$", ("vocab",)),
    # attention projections, per-head ([.., heads, head_dim]) or fused ([.., heads * head_dim])
    (r"(^|/)(query|key|value|q_proj|k_proj|v_proj)/kernel$", ("embed", "heads", "head_dim")),
    (r"(^|/)(query|key|value|q_proj|k_proj|v_proj)/kernel$", ("embed", "heads")),
    (r"(^|/)(query|key|value|q_proj|k_proj|v_proj)/bias$", ("heads", "head_dim")),
    (r"(^|/)(query|key|value|q_proj|k_proj|v_proj)/bias$", ("heads",)),
    (r"(^|/)(out|out_proj|o_proj)/kernel$", ("heads", "head_dim", "embed")),
    (r"(^|/)(out|out_proj|o_proj)/kernel$", ("heads", "embed")),
    # Transformer MLP: [embed, mlp] in, [mlp, embed] out (T5's gated MLP: wi_0, wi_1 in)
    (r"(?i)mlp[^/]*/(hidden|wi|wi_0|wi_1|fc1|dense_0)/kernel$", ("embed", "mlp")),
    (r"(?i)mlp[^/]*/(hidden|wi|fc1|dense_0)/bias$", ("mlp",)),
    (r"(?i)mlp[^/]*/(output|wo|fc2|dense_1)/kernel$", ("mlp", "embed")),
)

# logical axis -> mesh axis (None: replicated), as flax's logical partitioning takes them
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", DATA),
    ("vocab", MODEL),
    ("heads", MODEL),
    ("mlp", MODEL),
    ("embed", None),
    ("head_dim", None),
)


def check_mesh_form(shape: tuple) -> None:
    """Raises ConfigError unless `shape` is two ints, each > 0 or one of them -1."""
    where = f"config.mesh_shape={shape}"
    if len(shape) != 2 or not all(isinstance(n, int) for n in shape):
        raise ConfigError(f"{where}: must be two integers (data, model)")
    if any(n == 0 or n < -1 for n in shape) or shape == (-1, -1):
        raise ConfigError(f"{where}: each axis must be > 0, or -1 (all remaining devices) for one")


def resolve_mesh_shape(mesh_shape: Sequence[int], device_count: int) -> tuple[int, int]:
    """The (data, model) mesh shape with its -1 (if any) replaced by the remaining devices.

    Raises ConfigError naming the mesh and the device count when they do not fit.
    """
    shape = tuple(mesh_shape)
    check_mesh_form(shape)
    where = f"config.mesh_shape={shape}"
    fixed = abs(shape[0] * shape[1])  # the product of the axes that are not -1
    if -1 in shape:
        if device_count % fixed:
            raise ConfigError(f"{where}: {fixed} does not divide the {device_count} devices")
        return tuple(device_count // fixed if n == -1 else n for n in shape)
    if fixed != device_count:
        raise ConfigError(f"{where}: the mesh holds {fixed} devices, but there are {device_count}")
    return shape


def make_mesh(mesh_shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, model) mesh over `devices` (default: all devices of all processes).

    `mesh_shape` may hold one -1, meaning all the remaining devices; a shape that does not fit the
    device count raises ConfigError naming both, before anything compiles.
    """
    devices = jax.devices() if devices is None else list(devices)
    shape = resolve_mesh_shape(mesh_shape, len(devices))
    return jax.make_mesh(shape, (DATA, MODEL), axis_types=(AxisType.Auto,) * 2, devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension over `data`, the rest replicated; a prefix for any batch array."""
    return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch",), LOGICAL_AXIS_RULES))


def path_name(path: Sequence[Any]) -> str:
    """A pytree key path as "a/b/kernel"."""
    return "/".join(str(getattr(key, "key", getattr(key, "name", key))) for key in path)


def logical_axes(name: str, ndim: int) -> tuple[str, ...] | None:
    """The logical names of a parameter's dimensions by `PARAM_RULES`, or None (no rule)."""
    for pattern, axes in PARAM_RULES:
        if len(axes) == ndim and re.search(pattern, name):
            return axes
    return None


def param_spec(
    name: str, shape: Sequence[int], mesh_axis_sizes: Mapping[str, int], fsdp: bool = False
) -> PartitionSpec:
    """Where one parameter lives: the rule table's mesh axes, except on dimensions the mesh axis
    does not divide (replicated there). With `fsdp`, the largest still-replicated dimension that
    the `data` axis divides (the first of equals) is also split over `data`."""
    axes = logical_axes(name, len(shape))
    spec = [None] * len(shape)
    if axes is not None:
        spec = list(nn.logical_to_mesh_axes(axes, LOGICAL_AXIS_RULES))
    spec = [axis if axis is None or size % mesh_axis_sizes[axis] == 0 else None
            for axis, size in zip(spec, shape, strict=True)]
    data_size = mesh_axis_sizes[DATA]
    if fsdp and data_size > 1:
        free = [d for d, size in enumerate(shape) if spec[d] is None and size % data_size == 0]
        if free:
            spec[max(free, key=lambda d: shape[d])] = DATA
    return PartitionSpec(*spec)


def param_shardings(abstract_params: Any, mesh: Mesh, fsdp: bool = False) -> Any:
    """NamedShardings for a params tree (arrays or ShapeDtypeStructs), by `param_spec`."""
    sizes = dict(mesh.shape)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, param_spec(path_name(path), x.shape, sizes, fsdp)),
        abstract_params,
    )


def opt_state_shardings(
    tx: optax.GradientTransformation, abstract_opt_state: Any, params_shardings: Any, mesh: Mesh
) -> Any:
    """Each copy of the parameter tree inside the optimizer state (adam's mu, nu, ...) gets the
    parameters' shardings; everything else (step counts) is replicated.

    A copy is found by its path: a state leaf whose path ends in a parameter's path (the
    longest such) and has as many dimensions is that parameter's. This reads any optimizer's
    state, `multi_transform` over some of the parameters included (`flax_s2s.training.frozen`;
    optax's `tree_map_params` cannot see through it), so `tx` is not read."""
    del tx
    flat = jax.tree_util.tree_flatten_with_path(params_shardings)[0]
    by_name = {path_name(path): sharding for path, sharding in flat}

    def place(path: Any, leaf: Any) -> NamedSharding:
        name = path_name(path)
        matches = [n for n in by_name if name == n or name.endswith("/" + n)]
        sharding = by_name[max(matches, key=len)] if matches else None
        if sharding is None or len(sharding.spec) != len(getattr(leaf, "shape", ())):
            return replicated(mesh)
        return sharding

    return jax.tree_util.tree_map_with_path(place, abstract_opt_state)


def train_state_shardings(
    abstract_state: Any, tx: optax.GradientTransformation, mesh: Mesh, fsdp: bool = False
) -> Any:
    """Shardings for a train state with `params` and `opt_state` fields (a flax struct), and
    `ema_params` (the average of the parameters: placed as they are) where it has one; every
    other field (step, rng, BatchNorm statistics) is replicated."""
    params = param_shardings(abstract_state.params, mesh, fsdp)
    fields = {"params": params,
              "opt_state": opt_state_shardings(tx, abstract_state.opt_state, params, mesh)}
    if getattr(abstract_state, "ema_params", None):
        fields["ema_params"] = params
    return jax.tree.map(lambda _: replicated(mesh), abstract_state).replace(**fields)


def with_shardings(abstract: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying `shardings`: a restore target that allocates nothing."""
    return jax.tree.map(
        lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        abstract, shardings,
    )


def process_batch_rows(mesh: Mesh, global_batch: int) -> tuple[int, int]:
    """(index, count): this process holds rows [index * n, (index + 1) * n) of every global batch,
    n = global_batch // count, as `pipeline.train_dataset(process_index=index,
    process_count=count)` slices them.

    Read from the batch sharding rather than assumed from `jax.process_index()`: the mesh decides
    which devices, hence which processes, own which rows (on a mesh whose `data` axis lies within
    one process, every process holds the whole batch).
    """
    indices = batch_sharding(mesh).addressable_devices_indices_map((global_batch,))
    rows = sorted({index[0].indices(global_batch)[:2] for index in indices.values()})
    start, stop = rows[0][0], rows[-1][1]
    covered = sum(row_stop - row_start for row_start, row_stop in rows)
    local = stop - start
    if covered != local or global_batch % local or start % local:
        raise ConfigError(
            f"process {jax.process_index()} holds rows {rows} of the global batch of "
            f"{global_batch}: not one equal, contiguous slice; use a mesh whose `data` axis "
            f"groups each process's devices (mesh {dict(mesh.shape)})"
        )
    return start // local, global_batch // local


def global_batch(local_batch: Mapping[str, np.ndarray], sharding: NamedSharding,
                 global_batch_size: int) -> dict[str, jax.Array]:
    """This process's rows of a batch -> global arrays [global_batch_size, ...] split by
    `sharding` (every process calls it with its own rows, see `process_batch_rows`)."""
    return {
        key: jax.make_array_from_process_local_data(
            sharding, value, (global_batch_size, *value.shape[1:])
        )
        for key, value in local_batch.items()
    }


def global_batch_from_full(batch: Mapping[str, np.ndarray],
                           sharding: NamedSharding) -> dict[str, jax.Array]:
    """A batch that every process holds whole (evaluation, decoding) -> global arrays, each device
    taking its own slice."""
    return {
        key: jax.make_array_from_callback(value.shape, sharding, lambda index, v=value: v[index])
        for key, value in batch.items()
    }


def initialize_distributed(config: ml_collections.ConfigDict) -> bool:
    """Joins this process to a multi-process JAX runtime when `config.distributed` or the
    environment (JAX_COORDINATOR_ADDRESS) asks; returns whether it did.

    Call it before anything touches a device. Unset fields (empty address, num_processes 0,
    process_id -1) are left to JAX, which reads them from a cluster environment it recognises
    (Cloud TPU, SLURM, Open MPI, Kubernetes, ...).
    """
    dist = config.distributed
    address = dist.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    if not (dist.initialize or address):
        return False
    jax.distributed.initialize(
        coordinator_address=address or None,
        num_processes=dist.num_processes or None,
        process_id=None if dist.process_id < 0 else dist.process_id,
    )
    return True


__all__ = [
    "DATA", "LOGICAL_AXIS_RULES", "MODEL", "PARAM_RULES", "batch_sharding", "check_mesh_form",
    "global_batch", "global_batch_from_full", "initialize_distributed", "logical_axes",
    "make_mesh", "opt_state_shardings", "param_shardings", "param_spec", "process_batch_rows",
    "replicated", "resolve_mesh_shape", "train_state_shardings", "with_shardings",
]


def check_config(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
    """The mesh and the processes; with `device_count` (all devices of all processes), also the
    mesh against the devices and the batches against its `data` axis."""
    _check_mesh(config, device_count)
    _check_distributed(config)


def _check_mesh(config: ml_collections.ConfigDict, device_count: int | None) -> None:
    """The mesh's form; with `device_count`, also that it fits the devices and that its `data`
    axis divides the train and eval batches."""
    check_mesh_form(tuple(config.mesh_shape))
    if device_count is None:
        return
    data, _ = resolve_mesh_shape(config.mesh_shape, device_count)
    for key in ("batch_size", "eval_batch_size"):
        if config[key] % data:
            raise ConfigError(
                f"config.{key}={config[key]} is not divisible by the mesh's data axis of {data} "
                f"(config.mesh_shape={tuple(config.mesh_shape)} on {device_count} devices)"
            )


def data_shards(config: ml_collections.ConfigDict, device_count: int | None) -> int:
    """The size of the mesh's `data` axis on `device_count` devices (1 when unknown)."""
    return 1 if device_count is None else resolve_mesh_shape(config.mesh_shape, device_count)[0]


def _check_distributed(config: ml_collections.ConfigDict) -> None:
    dist = config.distributed
    if dist.num_processes < 0:
        raise ConfigError(f"config.distributed.num_processes={dist.num_processes}: must be >= 0")
    if dist.process_id < -1 or (dist.num_processes and dist.process_id >= dist.num_processes):
        raise ConfigError(
            f"config.distributed.process_id={dist.process_id}: must be -1 (from the environment) "
            f"or in [0, config.distributed.num_processes={dist.num_processes})"
        )
