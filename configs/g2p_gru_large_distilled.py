"""CMUdict G2P: a student of `configs/g2p_gru_large.py`'s size (BiGRU 256, 2 encoder layers, 2.7M
parameters) at batch 128, taught by two one-hour models (`configs/g2p_gru.py`, seeds 0 and 1) by
token-level distillation from their averaged distributions (docs/distillation.md).

The recipe, on 2 CPU cores, aimed at a budget of 4 hours in all: the teachers side by side, one
core each (about 75 minutes alone, 91-115 measured beside other runs), then the student on both
cores (it stops and resumes from its checkpoints):

    taskset -c 0 python train.py --config configs/g2p_gru.py --workdir runs/g2p_gru_seed0 \\
        --config.seed=0 &
    taskset -c 1 python train.py --config configs/g2p_gru.py --workdir runs/g2p_gru_seed1 \\
        --config.seed=1
    python train.py --config configs/g2p_gru_large_distilled.py --workdir runs/g2p_large_distilled

The student with its two teachers trains at 504-662 words/s on both cores (601-739 without them,
both at batch 128; bench/g2p_buckets.py, two runs): 36k steps would be 2 to 2.5 hours, but its
first run logged 3.5 steps/s on both cores (about 2.9 hours, over the budget with the teachers'
time) while it trained. What it reaches: bench/RESULTS.md ("G2P recipes: distillation and a
re-tuned hour") and docs/data.md.
"""

from configs import g2p_gru_distilled, g2p_gru_large


def get_config():
    config = g2p_gru_large.get_config()
    config.distill = g2p_gru_distilled.get_config().distill
    config.batch_size = 128
    config.num_train_steps = 36_000  # about 43 epochs
    config.log_every = 500
    config.eval_every = 4_000
    config.checkpoint_every = 4_000
    return config
