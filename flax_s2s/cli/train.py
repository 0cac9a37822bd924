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
from flax_s2s.errors import ConfigError, DataError, DiskFullError, FileFormatError, PathError
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
    try:  # the config file is loaded on first use
        config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
        config.keys()
    except OSError as error:
        raise SystemExit(_config_file_error(error)) from None
    try:
        # Filled and checked before joining other processes or touching a device; `run` checks
        # again with the device count (`prepare_config` owns both and is idempotent).
        prepare_config(config)
        # Before anything compiles: JAX decides at the first compile whether to use the cache.
        compilation_cache.enable(config.compilation_cache_dir, workdir)
        sharding.initialize_distributed(config)
        training.run(config, workdir)
    except (ConfigError, FileFormatError, FileNotFoundError, DiskFullError, PathError, DataError,
            PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError,
            training.NonFiniteError) as error:
        raise SystemExit(f"error: {error}") from None


def run() -> None:
    """The command: `python train.py ...`, `python -m flax_s2s.cli.train ...`, `flax-s2s-train`.
    Run from the repository root: configs import their base as `configs.default`, found from
    the working directory (as `python train.py` finds it beside itself)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:  # the config file and its overrides are read as the flag is defined
        define_flags()
    except _OVERRIDE_ERRORS as error:
        raise SystemExit(_override_error(error, sys.argv)) from None
    app.run(main, flags_parser=parse_flags)


_OVERRIDE_ERRORS = (KeyError, AttributeError, TypeError, ValueError)


def _override_error(error: Exception, argv: Sequence[str]) -> str:
    """One `error:` line for a --config override that names no config key (ml_collections'
    KeyError, "Did you mean ...") or cannot be set, naming the override."""
    message = str(error.args[0] if error.args else error).replace("\n", "; ")
    key = message.split(";")[0].strip("'\"")
    given = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    named = next((a for a in given if key and f".{key}" in a), "a --config override")
    return f"error: {named}: {message} (the config's keys are in configs/default.py)"


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's parsing, with a bad flag or --config override as one `error:` line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        raise SystemExit(f"error: {error} (--helpfull lists the flags)") from None
    except OSError as error:  # the config file, loaded to apply the overrides
        raise SystemExit(_config_file_error(error)) from None
    except _OVERRIDE_ERRORS as error:
        raise SystemExit(_override_error(error, argv)) from None


def _config_file_error(error: OSError) -> str:
    """One `error:` line for a config file that cannot be loaded (ml_collections' message lists
    the paths it tried)."""
    tried = " ".join(str(error).split())
    return f"error: --config: cannot be loaded ({tried}); give the path of a config file"


if __name__ == "__main__":
    run()
