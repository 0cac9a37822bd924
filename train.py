"""Train a flax_s2s model: `python train.py --config configs/addition_lstm.py --workdir DIR`.

Any config field can be overridden: `--config.num_train_steps=500 --config.model.hidden_dim=128`.
Running again with the same workdir resumes from its latest checkpoint. The command lives in
`flax_s2s/cli/train.py` (also `flax-s2s-train` once installed).
"""

from flax_s2s.cli.train import run

if __name__ == "__main__":
    run()
