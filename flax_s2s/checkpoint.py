"""Checkpoints with orbax: train state (params, optimizer state, step, PRNG key), the data
iterator's position and the config, saved together in one atomic step directory.

Orbax writes each step into a temporary directory and renames it on commit, so a run killed while
saving leaves the previous checkpoints intact.
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import orbax.checkpoint as ocp


class Checkpointer:
    """`WORKDIR/checkpoints/<step>/{state, data, config}`; keeps the newest `max_to_keep`."""

    def __init__(self, directory: str, max_to_keep: int = 3) -> None:
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iterator: Any, config: dict, force: bool = False) -> bool:
        """Saves asynchronously-safe copies; returns whether a checkpoint was written."""
        args = {
            "state": ocp.args.StandardSave(state),
            "config": ocp.args.JsonSave(config),
        }
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        saved = self.manager.save(step, args=ocp.args.Composite(**args), force=force)
        self.manager.wait_until_finished()
        return saved

    def restore(self, state_template: Any, data_iterator: Any = None, step: int | None = None):
        """Restores `step` (default: latest) into the structure of `state_template`; the data
        iterator, if given, is moved to the saved position in place. Returns the state."""
        step = self.latest_step() if step is None else step
        args = {"state": ocp.args.StandardRestore(state_template)}
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**args))
        return restored["state"]

    def restore_config(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        path = os.path.join(self.directory, str(step), "config", "metadata")
        if os.path.exists(path):  # read directly: no state template needed
            with open(path) as f:
                return json.load(f)
        return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))[
            "config"
        ]

    def close(self) -> None:
        self.manager.close()
