"""CMUdict G2P in an hour on 2 CPU cores, re-tuned for a CPU with AVX-512: a wider BiGRU (256 per
direction, 1.48M parameters) at batch 128, dropout 0.3, cosine decay over 28k steps (about 33
epochs).

Why these: on this CPU `configs/g2p_gru.py` (BiGRU 192, batch 64) trains at 1168-1310 words/s on
both cores, BiGRU 256 at 730-849, and batch 128 lifts BiGRU 256 to 1001-1133 (a wider matrix per
step; bench/g2p_buckets.py, two runs); `g2p_gru.py` ends with training loss far below validation
loss, so the hour buys width and dropout rather than more epochs of the narrow model. What it
reaches, and its wall time so far (trained beside another run, not yet alone on both cores):
bench/RESULTS.md ("G2P recipes: distillation and a re-tuned hour") and docs/data.md.
"""

from configs import g2p_gru


def get_config():
    config = g2p_gru.get_config()
    config.model.hidden_dim = 256
    config.model.attention_dim = 256
    config.model.dropout_rate = 0.3
    config.batch_size = 128
    # 28k steps x 128 words at 1001-1133 words/s: 53-60 minutes of steps, before data preparation,
    # compiles and the 7 evaluations.
    config.num_train_steps = 28_000
    config.log_every = 500
    config.eval_every = 4_000
    config.checkpoint_every = 4_000
    return config
