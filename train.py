"""Train a flax_s2s model: `python train.py --config configs/addition_lstm.py --workdir DIR`.

Any config field can be overridden: `--config.num_train_steps=500 --config.model.hidden_dim=128`.
Running again with the same workdir resumes from its latest checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from flax_s2s import compilation_cache, training
from flax_s2s.config_validation import ConfigError

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
    # Before anything compiles: JAX decides at the first compile whether to use the cache.
    compilation_cache.enable(flags.FLAGS.config.compilation_cache_dir, _WORKDIR.value)
    try:
        training.run(flags.FLAGS.config, _WORKDIR.value)
    except (ConfigError, training.NonFiniteError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    app.run(main)
