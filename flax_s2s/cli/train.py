"""`python train.py --config CONFIG --workdir DIR [--config.KEY=VALUE ...]` (or `flax-s2s-train`):
trains a model (`flax_s2s.training.run`).

Any config field can be overridden: `--config.num_train_steps=500 --config.model.hidden_dim=128`.
Running again with the same workdir resumes from its latest checkpoint. On several hosts, run it on
each with the same flags (see `config.distributed` and docs/devices.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

from flax_s2s import compilation_cache, sharding, training
from flax_s2s.cli import common
from flax_s2s.errors import ConfigError, DiskFullError, FileFormatError
from flax_s2s.training.config import prepare_config

DEFAULT_CONFIG = "configs/addition_lstm.py"


def define_flags() -> None:
    """The command's flags, defined only when it runs (see `flax_s2s.cli`)."""
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and vocabularies.")
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Path to a config file.",
                                    lock_config=True)
    flags.mark_flags_as_required(["workdir"])


def main(argv: Sequence[str]) -> None:
    common.start(argv)
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    try:
        # Filled and checked before joining other processes or touching a device; `run` checks
        # again with the device count (`prepare_config` owns both and is idempotent).
        prepare_config(config)
        # Before anything compiles: JAX decides at the first compile whether to use the cache.
        compilation_cache.enable(config.compilation_cache_dir, workdir)
        sharding.initialize_distributed(config)
        training.run(config, workdir)
    except (ConfigError, FileFormatError, FileNotFoundError, DiskFullError,
            training.NonFiniteError) as error:
        raise SystemExit(f"error: {error}") from None


def run() -> None:
    """The command: `python train.py ...`, `python -m flax_s2s.cli.train ...`, `flax-s2s-train`.
    Run from the repository root: configs import their base as `configs.default`, found from
    the working directory (as `python train.py` finds it beside itself)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
