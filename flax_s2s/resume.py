"""What may change when a run resumes: the requested config against the one its workdir saved.

A resumed run continues the saved state (parameters, optimizer moments, data order, random keys),
so anything that shapes that state or the data must be what the saved run used: the model, the
vocabulary, the task and its data, batch size and lengths, the optimizer, the forcing schedule,
the seed, whether the state keeps an average of the parameters (`ema_decay`). What only says
how long to train, how often to log, evaluate or save, how to evaluate, when to stop early, how
many microbatches make a step's gradient (the same gradient, to rounding), which activations
are recomputed (`model.remat`: the same gradient, to rounding), whether the train
split is read from its token store (the same batches), or where and on which devices to run may
change. Unknown keys (added to the config after the saved run, or removed since) are not
compared, except those in `BEFORE_ADDED`, which a saved run that predates them had implicitly.
Keys that hold paths compare as the files they name (the caller says how each resolves), so
`runs/a` and its absolute spelling are the same teacher.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from flax_s2s.errors import ConfigError

# Keys (or key prefixes ending in ".") that may differ from the saved run's on resume.
MAY_CHANGE = (
    "num_train_steps", "log_every", "eval_every", "checkpoint_every", "max_checkpoints",
    "keep_best", "best_metric", "best_mode", "eval_batch_size", "eval_beam_size",
    "eval_length_alpha", "eval_splits", "final_eval_split", "text_metrics", "mesh_shape", "fsdp",
    "distributed.", "compilation_cache_dir", "data_dir", "tfds_data_dir", "init_from",
    "init_from_step", "pretrained", "nonfinite_policy", "grad_accum_steps",
    "eval_with_ema", "early_stopping.", "token_store", "model.remat", "model.remat_policy",
)

# Keys that change the saved state, with the value a run saved before they existed had: a saved
# config without `ema_decay` kept no average, so resuming it with one is refused like a change.
BEFORE_ADDED = {"ema_decay": 0.0, "pack": False, "frozen": [], "lora.rank": 0,
                "teacher_forcing.input_noise": 0.0, "teacher_forcing.oracle_targets": False,
                "mrt.weight": 0.0}


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _may_change(key: str) -> bool:
    return any(key == allowed or (allowed.endswith(".") and key.startswith(allowed))
               for allowed in MAY_CHANGE)


Resolver = Callable[[str], "str | os.PathLike[str]"]  # a path as the run reads it
PathResolvers = Mapping[str, Resolver]


def _resolved(value: Any, resolve: Resolver) -> Any:
    """A path (or each of a list of paths) as the real path it names; "" stays ""."""
    if isinstance(value, (list, tuple)):
        return [_resolved(path, resolve) for path in value]
    return os.path.realpath(resolve(value)) if value else value


def _same(saved: Any, requested: Any, resolve: Resolver | None) -> bool:
    if saved == requested:
        return True
    return resolve is not None and _resolved(saved, resolve) == _resolved(requested, resolve)


def config_changes(
    saved: dict[str, Any], requested: dict[str, Any], paths: PathResolvers | None = None
) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]]]:
    """(changes that resuming cannot honour, changes it may take), each {key: (saved, requested)},
    for two configs as JSON dicts (`json.loads(config.to_json())`). `paths` maps each key that
    holds a path (or a list of paths) to how a run resolves one (e.g. against the repository
    root); those keys differ only where the resolved real paths do."""
    paths = paths or {}
    saved, requested = {**BEFORE_ADDED, **_flat(saved)}, _flat(requested)
    changed = {key: (saved[key], requested[key]) for key in sorted(saved.keys() & requested.keys())
               if not _same(saved[key], requested[key], paths.get(key))}
    refused = {key: values for key, values in changed.items() if not _may_change(key)}
    accepted = {key: values for key, values in changed.items() if _may_change(key)}
    return refused, accepted


def check_resume(
    saved: dict[str, Any], requested: dict[str, Any], workdir: str,
    paths: PathResolvers | None = None,
) -> list[str]:
    """Raises ConfigError listing every key that differs from the saved run's and must not;
    returns the accepted changes as "key saved -> requested" for the log. `paths`: as in
    `config_changes`."""
    refused, accepted = config_changes(saved, requested, paths)
    if refused:
        listed = "; ".join(f"config.{key}: saved {old!r}, requested {new!r}"
                           for key, (old, new) in refused.items())
        raise ConfigError(
            f"{workdir} holds a run that this config cannot resume: {listed}. Resuming continues "
            f"the saved state, so these must be as saved: train in a new workdir, or start one "
            f"from this run's parameters there with --config.init_from={workdir}"
        )
    return [f"{key} {old!r} -> {new!r}" for key, (old, new) in accepted.items()]
