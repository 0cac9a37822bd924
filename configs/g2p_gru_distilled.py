"""CMUdict G2P: the one-hour model (`configs/g2p_gru.py`) taught by two one-hour models of its own
size, token-level distillation from their averaged distributions (docs/distillation.md).

The recipe, on 2 CPU cores: train the teachers side by side, one core each, then the student:

    taskset -c 0 python train.py --config configs/g2p_gru.py --workdir runs/g2p_gru_seed0 \\
        --config.seed=0 &
    taskset -c 1 python train.py --config configs/g2p_gru.py --workdir runs/g2p_gru_seed1 \\
        --config.seed=1
    python train.py --config configs/g2p_gru_distilled.py --workdir runs/g2p_gru_distilled

Each teacher alone scores about 24% validation WER, the two decoded together 21.76 / 5.20. The
student (seed 0) ended at 24.03% WER / 5.77% PER, where the same model without teachers ends
(23.78-24.12 / 5.75-5.79 over three seeds): at its own size it does not take the ensemble's gain
(bench/RESULTS.md, "G2P recipes: distillation and a re-tuned hour"). The larger student of
`configs/g2p_gru_large_distilled.py` is the recipe aimed at the ensemble's accuracy.
The student's step costs about 1.35x the plain one (two teachers of its size run inside it).
"""

from configs import g2p_gru


def get_config():
    config = g2p_gru.get_config()
    config.distill.teachers = ("runs/g2p_gru_seed0", "runs/g2p_gru_seed1")
    # Half gold cross-entropy, half KL to the teachers' mean at temperature 1: the defaults,
    # not tuned (each try costs a student's training).
    config.distill.weight = 0.5
    config.distill.temperature = 1.0
    return config
