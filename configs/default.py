"""Every knob of flax_s2s, documented in one place. Other configs start from this one.

Override any field from the command line: `python train.py --config configs/addition_lstm.py
--config.num_train_steps=500 --config.model.hidden_dim=128`. ml_collections refuses unknown keys
and values of the wrong type before anything is built or compiled.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # Every random choice (initialisation, data order, dropout, teacher-forcing masks) derives from
    # this seed through jax.random keys.
    config.seed = 0

    # --- data ---
    config.task = "addition"  # a TFDS builder generated in code: addition | reverse
    # Where TFDS builders are prepared. Empty: `<workdir>/../tfds`, shared by runs side by side.
    config.data_dir = ""
    config.max_src_len = 8  # source tokens per example (no EOS on the source)
    config.max_tgt_len = 6  # target tokens per example, EOS included
    config.too_long = "drop"  # an example over the limits: "drop" (and count) or "error"
    config.batch_size = 128  # global batch, examples per train step
    config.eval_batch_size = 500  # examples per eval step; the last batch is padded

    # --- model ---
    config.model = ml_collections.ConfigDict()
    # lstm: RNN encoder-decoder with additive attention; transformer: encoder-decoder Transformer
    # with a KV cache for decoding.
    config.model.type = "lstm"
    # Both types:
    # Normalisation (flax_s2s/models/norms.py): layer | rms | batch | none. "batch" is BatchNorm
    # with statistics over non-pad positions and running averages for eval and decoding; it trains
    # only with full teacher forcing. A Transformer wants "layer" or "rms".
    config.model.norm = "none"
    # pre: normalise what each sublayer reads (Transformer: x + f(norm(x)), with a final norm per
    # stack; LSTM: each recurrent layer's input). post: normalise after the residual sum
    # (Transformer: norm(x + f(x)); LSTM: each recurrent layer's output).
    config.model.norm_position = "pre"
    config.model.num_encoder_layers = 1
    config.model.dropout_rate = 0.0  # embeddings and sublayer outputs, in training only
    config.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)
    # lstm only:
    config.model.cell = "lstm"  # lstm | gru
    config.model.emb_dim = 64
    config.model.hidden_dim = 256  # recurrent width, per direction
    config.model.bidirectional = True  # encoder reads both ways
    config.model.attention_dim = 128  # width of the additive (Bahdanau) scorer
    # transformer only:
    config.model.d_model = 128  # embedding and residual width
    config.model.num_heads = 4  # d_model must be divisible by it
    config.model.mlp_dim = 512  # hidden width of each MLP sublayer
    config.model.num_decoder_layers = 2
    # One embedding table for source and target; needs one vocabulary on both sides (the built
    # source and target vocabularies must be equal, as in the reverse task).
    config.model.share_embeddings = False
    config.model.tie_output = False  # output projection = the target embedding, transposed
    # sinusoidal (any length) | learned (up to max(max_src_len, max_tgt_len) positions)
    config.model.positions = "sinusoidal"

    # --- optimisation: adamw, linear warmup then cosine decay, global-norm clipping ---
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 3e-3  # peak, reached after warmup_steps
    config.optimizer.warmup_steps = 100
    config.optimizer.end_lr_factor = 0.01  # final learning rate = factor * peak
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.98
    config.optimizer.weight_decay = 1e-4
    config.optimizer.grad_clip_norm = 1.0
    config.label_smoothing = 0.0

    # --- loop ---
    config.num_train_steps = 3000
    config.log_every = 100  # train loss/accuracy to metrics.jsonl and the progress line
    config.eval_every = 1000  # eval on eval_splits; the test split is evaluated once at the end
    config.eval_splits = ("validation",)
    config.final_eval_split = "test"
    config.checkpoint_every = 1000
    config.max_checkpoints = 3  # newest checkpoints kept
    return config
