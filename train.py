"""Train a flax_s2s model: `python train.py --config configs/addition_lstm.py --workdir DIR`.

Any config field can be overridden: `--config.num_train_steps=500 --config.model.hidden_dim=128`.
Running again with the same workdir resumes from its latest checkpoint. On several hosts, run it on
each with the same flags (see `config.distributed` and the README).
"""

from absl import app, flags, logging
from ml_collections import config_flags

from flax_s2s import compilation_cache, pretrained, sharding, training
from flax_s2s.config_validation import ConfigError, validate_config
from flax_s2s.errors import DiskFullError, FileFormatError

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and vocabularies.")
config_flags.DEFINE_config_file(
    "config", "configs/addition_lstm.py", "Path to a config file.", lock_config=True
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax and grain log every save at INFO
    config = flags.FLAGS.config
    try:
        pretrained.configure(config)  # model and vocabulary from config.pretrained, if any
        validate_config(config)  # before joining other processes or touching a device
        # Before anything compiles: JAX decides at the first compile whether to use the cache.
        compilation_cache.enable(config.compilation_cache_dir, _WORKDIR.value)
        sharding.initialize_distributed(config)
        training.run(config, _WORKDIR.value)
    except (ConfigError, FileFormatError, FileNotFoundError, DiskFullError,
            training.NonFiniteError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    app.run(main)
