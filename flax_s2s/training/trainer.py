"""A run of training, `run(config, workdir)`: the config filled and checked, one trainer per
workdir, and a full disk named; the loop itself is `flax_s2s.training.loop`."""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections

from flax_s2s import workdir_lock
from flax_s2s.checkpoint import newest_checkpoint
from flax_s2s.errors import DiskFullError, check_writable_dir, is_disk_full
from flax_s2s.training import loop
from flax_s2s.training.config import prepare_config


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its newest readable checkpoint), evaluates on
    the final eval split, and returns {"step", "final": metrics, "wall_time_s", "stopped_by"}.

    SIGTERM/SIGINT end the run early after saving a checkpoint (`stopped_by` names the signal,
    and no final evaluation runs). Non-finite steps skip their update; under
    nonfinite_policy="stop" the run raises NonFiniteError at the next log or checkpoint step,
    without saving, so the last good checkpoint stays the newest. Early stopping
    (`config.early_stopping.patience` > 0, see `flax_s2s.early_stopping`) ends the run after a
    checkpoint, `stopped_by` "early_stopping", and the final evaluation is that of the best kept
    checkpoint (each final record names it as `checkpoint_step`).

    Evals use the average of the parameters where the run keeps one (`config.ema_decay` > 0)
    and `config.eval_with_ema`, else the raw parameters.

    A full disk (ENOSPC) ends the run with DiskFullError naming the newest checkpoint saved whole
    (a checkpoint cut short is removed); run again with space to resume from it.

    A workdir (or data_dir) that is a file, lies under one or cannot be written raises
    PathError naming it before anything is written.
    One trainer per workdir: process 0 holds `WORKDIR/trainer.lock` for the run (see
    `flax_s2s.workdir_lock`), and a second trainer there fails at once, naming the first.
    """
    start_time = time.time()
    prepare_config(config, jax.device_count())
    check_writable_dir(workdir, "workdir")  # before anything is written there
    if config.get("data_dir"):
        check_writable_dir(config.data_dir, "config.data_dir", read_only_ok=True)
    lock = workdir_lock.acquire(workdir) if jax.process_index() == 0 else None
    try:
        return loop.train(config, workdir, start_time)
    except OSError as error:  # a checkpoint's own ENOSPC is a DiskFullError already
        if not is_disk_full(error):
            raise
        checkpoints = newest_checkpoint(os.path.join(workdir, "checkpoints"))
        raise DiskFullError(f"the disk is full (ENOSPC, no space left on device) writing in "
                            f"{workdir} ({error}); {checkpoints}. Free space (or copy the workdir "
                            "where there is some) and run again to resume from it") from None
    finally:
        if lock is not None:
            workdir_lock.release(lock)
