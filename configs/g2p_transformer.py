"""CMUdict grapheme-to-phoneme with a small pre-LayerNorm Transformer.

Same data, splits and metrics as `configs/g2p_lstm.py` (g014b2b.train, 5% of its words carved
out as validation; WER/PER with multiple references). Evaluate a trained workdir with
`python -m flax_s2s.cli.evaluate --workdir DIR --split validation [--beam N]` or on any lexicon file
with `--data FILE`.

Not trained to the end here yet: on 2 CPU cores a Transformer step costs far more per word than
the GRU's (d_model 192, 2+2 layers: 554 words/s; d_model 256, 3+3: 281; GRU 192: 1432, length
buckets on for all; bench/RESULTS.md). On an Intel Xeon with bfloat16 matrix units: 357 words/s,
324 in bfloat16, against the GRU's 1182. So the measured G2P recipes are `configs/g2p_gru.py`
(one hour), `configs/g2p_gru_large.py` (about four) and the distilled students. On an accelerator
this is the one to scale.
"""

from configs import g2p_lstm


def get_config():
    config = g2p_lstm.get_config()
    config.model.type = "transformer"
    config.model.norm = "layer"
    config.model.norm_position = "pre"
    config.model.d_model = 192
    config.model.num_heads = 4
    config.model.mlp_dim = 768
    config.model.num_encoder_layers = 3
    config.model.num_decoder_layers = 3
    config.model.dropout_rate = 0.1
    config.label_smoothing = 0.1

    config.batch_size = 64
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 2_000
    config.num_train_steps = 60_000
    return config
