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
    config.task = "addition"  # a TFDS builder generated in code: addition
    # Where TFDS builders are prepared. Empty: `<workdir>/../tfds`, shared by runs side by side.
    config.data_dir = ""
    config.max_src_len = 8  # source tokens per example (no EOS on the source)
    config.max_tgt_len = 6  # target tokens per example, EOS included
    config.too_long = "drop"  # an example over the limits: "drop" (and count) or "error"
    config.batch_size = 128  # global batch, examples per train step
    config.eval_batch_size = 500  # examples per eval step; the last batch is padded

    # --- model ---
    config.model = ml_collections.ConfigDict()
    config.model.type = "lstm"  # lstm (RNN encoder-decoder with attention; cell below)
    config.model.cell = "lstm"  # lstm | gru
    config.model.emb_dim = 64
    config.model.hidden_dim = 256  # recurrent width, per direction
    config.model.bidirectional = True  # encoder reads both ways
    config.model.num_encoder_layers = 1
    config.model.attention_dim = 128  # width of the additive (Bahdanau) scorer
    config.model.dropout_rate = 0.0

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

    # --- teacher forcing / scheduled sampling (flax_s2s/forcing.py) ---
    # At train step `step` each (example, target position) reads the gold previous token with
    # probability p(step), otherwise the model's own token from the previous position. The mask is
    # drawn from the train state's key folded with the step, so a resumed run draws the same masks.
    config.teacher_forcing = ml_collections.ConfigDict()
    # p(step): constant: p | linear: max(floor, k - slope * step)
    #   | exponential: max(floor, k ** step), needs 0 < k < 1
    #   | inverse_sigmoid: max(floor, k / (k + exp(step / k))), needs k >= 1 (p = 1/2 near
    #     step = k * ln k)
    # constant with p = 1 (the default) is plain teacher forcing on the parallel forward pass.
    config.teacher_forcing.schedule = "constant"
    config.teacher_forcing.p = 1.0  # constant schedule only; 0 = always the model's own tokens
    config.teacher_forcing.k = 1.0  # linear: start value in [floor, 1]; else the decay rate
    config.teacher_forcing.slope = 1e-4  # linear only: decrease of p per step, > 0
    config.teacher_forcing.floor = 0.0  # lower bound of a decaying p, in [0, 1]
    # The own token: "argmax" | "sample" (from softmax(logits / temperature)). Never differentiated.
    # "soft" (the expected embedding under the softmax) is a later variant: the model seam feeds
    # tokens, not embeddings, so config validation refuses it.
    config.teacher_forcing.choice = "argmax"
    config.teacher_forcing.temperature = 1.0  # choice="sample" only, > 0
    # "exact": one lax.scan of the decoder step over target positions, each reading the model's
    # real previous output. "two_pass": a teacher-forced parallel pass predicts the own tokens, a
    # second parallel pass reads the mix (cheaper for Transformers; approximate).
    config.teacher_forcing.mode = "exact"

    # --- loop ---
    config.num_train_steps = 3000
    config.log_every = 100  # train loss/accuracy to metrics.jsonl and the progress line
    config.eval_every = 1000  # eval on eval_splits; the test split is evaluated once at the end
    config.eval_splits = ("validation",)
    config.final_eval_split = "test"
    config.checkpoint_every = 1000
    config.max_checkpoints = 3  # newest checkpoints kept
    return config
