"""Checkpoints with orbax: train state (params, optimizer state, step, PRNG key), the data
iterator's position and the config, saved together in one atomic step directory.

Orbax writes each step into a temporary directory and renames it on commit, so a run killed while
saving leaves the previous checkpoints intact.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import shutil
import warnings
from collections.abc import Sequence
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from flax_s2s import config_checks, lora
from flax_s2s.errors import ConfigError, DiskFullError, FileFormatError, is_disk_full, read_json_object

BEST_MODES = ("max", "min")  # whether a higher or a lower metric is better for `keep_best`
# Keys every config a run saved has held (configs/default.py has had them from its first version):
# a saved config without one is damaged, and a resume could not check what it would continue
# (`restore_config(..., required=CONFIG_KEYS)`).
CONFIG_KEYS = ("seed", "task", "max_src_len", "max_tgt_len", "batch_size", "model", "optimizer")


class _WithoutMetricNotice(logging.Filter):
    """Drops orbax's warning that a checkpoint was saved without a metric: with keep_best, the
    checkpoints between evals have none by design (they are kept as newest, not as best)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_WithoutMetricNotice())  # orbax logs through absl


def newest_checkpoint(directory: str) -> str:
    """"the newest checkpoint saved whole is DIR/<step>" (or that there is none), for messages:
    orbax commits a step directory by renaming its temporary one, so every directory named by a
    step number holds a complete save."""
    steps = [int(name) for name in os.listdir(directory) if name.isdigit()] if os.path.isdir(
        directory) else []
    if not steps:
        return f"no checkpoint was saved in {directory} before it"
    return f"the newest checkpoint saved whole is {os.path.join(directory, str(max(steps)))}"


class Checkpointer:
    """`WORKDIR/checkpoints/<step>/{state, data, config}`, and any JSON `extras` (e.g. the
    eval history early stopping counts on).

    Keeps the newest `max_to_keep` checkpoints and, when `keep_best` > 0, also the `keep_best`
    best by the metric passed to `save(..., metric=...)` (higher is better when `best_mode` is
    "max").

    `restored_step` is the step the last `restore()` read (it may be older than the newest when
    that one is unreadable), None before any restore.
    """

    def __init__(
        self, directory: str, max_to_keep: int = 3, keep_best: int = 0, best_mode: str = "max"
    ) -> None:
        if best_mode not in BEST_MODES:
            raise ValueError(f"best_mode must be one of {list(BEST_MODES)}, got {best_mode!r}")
        self.directory = os.path.abspath(directory)
        self.restored_step: int | None = None
        keep: list[policies.PreservationPolicy] = [policies.LatestN(n=max_to_keep)]
        if keep_best > 0:
            keep.append(
                policies.BestN(
                    get_metric_fn=lambda metrics: metrics["metric"],
                    reverse=best_mode == "min",
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        # best_fn (with keep_best) makes orbax write each checkpoint's metric and read it back
        # when a resumed run reopens the directory; without it the metrics of the checkpoints
        # saved before are unknown, and BestN would delete those checkpoints at the next save.
        best = {"best_fn": lambda metrics: metrics["metric"], "best_mode": best_mode} if keep_best else {}
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                create=True, preservation_policy=policies.AnyPreservationPolicy(keep), **best
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(
        self,
        step: int,
        state: Any,
        data_iterator: Any,
        config: dict,
        force: bool = False,
        metric: float | None = None,
        extras: dict[str, dict] | None = None,
    ) -> bool:
        """Writes checkpoint `step` and waits until it is committed; returns whether it was
        written (False when `step` is already saved). `metric` ranks it for `keep_best`.
        `extras`: {name: JSON-able dict}, each saved as item `name` (`restore_extra` reads it)."""
        args = {
            "state": ocp.args.StandardSave(state),
            "config": ocp.args.JsonSave(config),
            **{name: ocp.args.JsonSave(value) for name, value in (extras or {}).items()},
        }
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        metrics = None if metric is None else {"metric": float(metric)}
        try:
            saved = self.manager.save(
                step, args=ocp.args.Composite(**args), force=force, metrics=metrics
            )
            self.manager.wait_until_finished()
        except Exception as error:
            if not is_disk_full(error):
                raise
            self._remove_partial(step)
            raise DiskFullError(
                f"the disk is full (ENOSPC, no space left on device): checkpoint {step} could not "
                f"be written to {self.directory} and its partial copy was removed; "
                f"{newest_checkpoint(self.directory)}. Free space (or copy the workdir where "
                "there is some) and run again to resume from it"
            ) from None
        return saved

    def _remove_partial(self, step: int) -> None:
        """Deletes orbax's temporary directory of an unfinished save of `step` (what it wrote
        before it failed), giving its space back."""
        for name in os.listdir(self.directory):
            if name.startswith(f"{step}.orbax-checkpoint-tmp"):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore(
        self, state_template: Any, data_iterator: Any = None, step: int | None = None,
        set_aside: bool = True,
    ):
        """Restores `step` (default: the newest readable one) into the structure of
        `state_template`; the data iterator, if given, is moved to the saved position in place.

        The template may be ShapeDtypeStructs carrying shardings: the arrays are then read
        straight into those shardings, whatever mesh saved them (`sharding.with_shardings`).

        Without an explicit step, a checkpoint that fails to read (truncated, empty or deleted
        files of any item: the state, the data position, the config or an extra) is skipped
        with a warning naming it, and the next older one is tried; with `set_aside` (a run about
        to resume) the skipped ones are renamed `unreadable-<step>`, so that it can save those
        steps again. Readers (decode, evaluate) pass False and leave the directory as
        it is: a trainer may still be writing to it.
        Returns the state; `restored_step` says which step it is.
        """
        candidates = [step] if step is not None else self.all_steps()[::-1]
        errors = []
        for candidate in candidates:
            template, missing = self._fields_on_disk(candidate, state_template)
            args = {"state": ocp.args.StandardRestore(template)}
            if data_iterator is not None:
                self._check_process_count(candidate)
                args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
            try:
                self.check_json_items(candidate)
                restored = self.manager.restore(candidate, args=ocp.args.Composite(**args))
            except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is skipped
                if step is not None:
                    raise
                path = os.path.join(self.directory, str(candidate))
                warnings.warn(f"checkpoint {path} is unreadable, skipping it: {error!r:.300}",
                              stacklevel=2)
                errors.append(candidate)
                continue
            if set_aside:
                self._set_aside(errors)
            self.restored_step = candidate
            if missing:  # the fields the checkpoint predates, as the template has them (empty)
                return state_template.replace(**restored["state"])
            return restored["state"]
        raise FileNotFoundError(
            f"no readable checkpoint in {self.directory} (unreadable steps: {errors})"
        )

    def _fields_on_disk(self, step: int, template: Any) -> tuple[Any, list[str]]:
        """(the restore target for `step`, the template's fields it lacks on disk).

        A state field added since a checkpoint was written (the average of the parameters) is
        absent from it; where the template's value is empty (that feature off in this run too),
        the target is a dict of the fields on disk and the caller takes the rest from the
        template. A missing field that the template fills is a ValueError naming it: the saved
        run never had it (resume.py refuses such configs first)."""
        if not dataclasses.is_dataclass(template):
            return template, []
        try:
            saved = self._saved_tree(step)
        except Exception:  # noqa: BLE001 - unreadable: restoring it fails and says so
            return template, []
        fields = [f.name for f in dataclasses.fields(template)]
        missing = [name for name in fields if name not in saved]
        if not missing:
            return template, []
        filled = [name for name in missing if jax.tree.leaves(getattr(template, name))]
        if filled:
            raise ValueError(
                f"checkpoint {os.path.join(self.directory, str(step))} holds no {filled}: it was "
                f"saved by a run without them (config.ema_decay=0 for ema_params)"
            )
        return {name: getattr(template, name) for name in fields if name in saved}, missing

    def _saved_tree(self, step: int) -> Any:
        """The saved state's tree of array metadata (shapes, dtypes), read without the arrays."""
        path = os.path.join(self.directory, str(step), "state")
        return ocp.StandardCheckpointHandler().metadata(pathlib.Path(path)).tree

    def _check_process_count(self, step: int) -> None:
        """grain saves the data position per process (`process_<i>-of-<n>.json`): a run with
        another number of processes cannot read it. Say so instead of calling it unreadable."""
        data_dir = os.path.join(self.directory, str(step), "data")
        saved = {name.rsplit("-of-", 1)[-1].removesuffix(".json")
                 for name in (os.listdir(data_dir) if os.path.isdir(data_dir) else [])
                 if name.startswith("process_")}
        if saved and str(jax.process_count()) not in saved:
            raise ValueError(
                f"checkpoint {os.path.join(self.directory, str(step))} was saved by "
                f"{'/'.join(sorted(saved))} processes; resume it with as many (this run has "
                f"{jax.process_count()})"
            )

    def restore_variables(self, step: int | None = None, raw_weights: bool = False) -> dict[str, Any]:
        """The model variables ({"params": ...}) of `step` (default: latest), without needing a
        train-state template: for decoding, evaluation and reports. Where the run kept an
        average of its parameters (`ema_params`, config.ema_decay > 0), "params" is that average,
        unless `raw_weights`. LoRA factors (`flax_s2s.lora`) are merged into the weights."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(self._on_one_device(step)))
        )["state"]
        if restored.get("ema_params") and not raw_weights:
            restored["params"] = restored["ema_params"]
        variables = {k: restored[k] for k in ("params", "batch_stats") if restored.get(k)}
        return lora.merged_variables(variables)  # LoRA factors merged: a plain model's variables

    def restore_newest_variables(self, raw_weights: bool = False) -> tuple[dict[str, Any], int]:
        """(variables, step) of the newest checkpoint whose variables and JSON items (the config,
        extras) read; unreadable ones are
        skipped with a warning naming them and left in place. FileNotFoundError when none reads."""
        skipped = []
        for step in self.all_steps()[::-1]:
            try:
                self.check_json_items(step)
                return self.restore_variables(step, raw_weights), step
            except Exception as error:  # noqa: BLE001 - an unreadable checkpoint: try an older one
                warnings.warn(f"checkpoint {os.path.join(self.directory, str(step))} is "
                              f"unreadable, skipping it: {error!r:.300}", stacklevel=2)
                skipped.append(step)
        raise FileNotFoundError(
            f"no readable checkpoint in {self.directory} (unreadable steps: {skipped})"
        )

    def _on_one_device(self, step: int) -> Any:
        """A restore target for the saved state, all on this process's first device. Without a
        target, orbax would rebuild the saving run's shardings, which fails on other devices."""
        saved = self._saved_tree(step)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), saved)

    def _set_aside(self, steps: list[int]) -> None:
        """Moves unreadable step directories to `unreadable-<step>` (kept for inspection), so
        the resumed run can save those steps again."""
        for step in steps:
            source = os.path.join(self.directory, str(step))
            target, n = os.path.join(self.directory, f"unreadable-{step}"), 1
            while os.path.exists(target):
                target, n = os.path.join(self.directory, f"unreadable-{step}.{n}"), n + 1
            if os.path.exists(source):
                os.replace(source, target)
        if steps:
            self.manager.reload()

    def check_json_items(self, step: int) -> None:
        """FileFormatError naming the file when an item of checkpoint `step` saved as JSON (the
        config, each extra) is missing or unreadable: empty or cut short by a power loss, say."""
        directory = os.path.join(self.directory, str(step))
        for item in sorted(os.listdir(directory)):
            if item in ("state", "data") or not os.path.isdir(os.path.join(directory, item)):
                continue
            path = os.path.join(directory, item, "metadata")
            if not os.path.exists(path):
                if item != "config":  # orbax's own items (the best-checkpoint metrics) hold none
                    continue
                raise FileFormatError(f"{path}: no such file; expected the {item} saved with "
                                      f"checkpoint {step} (a JSON object)")
            read_json_object(path, f"the {item} saved with the checkpoint, a JSON object")

    def restore_config(self, step: int | None = None, required: Sequence[str] = ()) -> dict:
        """The config saved with `step` (default: that of the newest checkpoint whose config
        reads, older ones tried with a warning naming each one skipped, as `restore` skips them),
        as a JSON dict. A file that is not valid JSON, not an object, or lacks one of the
        `required` keys (`CONFIG_KEYS` for the config of a run) raises FileFormatError naming it
        (and the line); so does a checkpoint without the item. Without a `step`, the error is
        the newest checkpoint's, when none reads."""
        if step is not None:
            return self._read_config(step, required)
        steps, first_error = self.all_steps()[::-1] or [None], None
        for candidate in steps:
            try:
                return self._read_config(candidate, required)
            except FileFormatError as error:
                if candidate is None:
                    raise
                first_error = first_error or error
                warnings.warn(f"checkpoint {os.path.join(self.directory, str(candidate))} is "
                              f"unreadable, skipping it: {error}", stacklevel=2)
        raise first_error

    def _read_config(self, step: int | None, required: Sequence[str]) -> dict:
        """The config saved with `step`, checked as `restore_config` says."""
        path = os.path.join(self.directory, str(step), "config", "metadata")
        if not os.path.exists(path):
            raise FileFormatError(f"{path}: no such file; expected the config saved with "
                                  f"checkpoint {step} (a JSON object)")
        config = read_json_object(path, "the config saved with the checkpoint, a JSON object")
        missing = [key for key in required if key not in config]
        if missing:
            raise FileFormatError(f"{path}: the saved config lacks {missing}; expected a JSON "
                                  f"object with the keys every saved config has: {list(required)}")
        return config

    def restore_extra(self, name: str, step: int | None = None) -> dict | None:
        """The JSON item `name` that `save(..., extras=...)` wrote with `step` (default: the
        latest), or None where that checkpoint has none (saved before it, or without it). An
        unreadable one raises FileFormatError naming the file."""
        step = self.latest_step() if step is None else step
        path = os.path.join(self.directory, str(step), name, "metadata")
        if not os.path.exists(path):
            return None
        return read_json_object(path, f"the {name} saved with the checkpoint, a JSON object")

    def close(self) -> None:
        self.manager.close()


def check_config(config: Any) -> None:
    """How many checkpoints are kept, and which way the best metric is better."""
    config_checks.positive(config, "max_checkpoints")
    config_checks.one_of(config, "best_mode", BEST_MODES)
    if config.keep_best < 0:
        raise ConfigError(f"config.keep_best={config.keep_best}: must be >= 0")
