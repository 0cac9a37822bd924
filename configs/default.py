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
    # Examples per eval step; the last batch is padded. Like batch_size, it must be divisible by
    # the mesh's `data` axis (a power of two fits common device counts).
    config.eval_batch_size = 512

    # --- model ---
    config.model = ml_collections.ConfigDict()
    config.model.type = "lstm"  # lstm (RNN encoder-decoder with attention; cell below)
    config.model.cell = "lstm"  # lstm | gru
    config.model.emb_dim = 64
    config.model.hidden_dim = 128  # recurrent width, per direction
    config.model.bidirectional = True  # encoder reads both ways
    config.model.num_encoder_layers = 1
    config.model.attention_dim = 128  # width of the additive (Bahdanau) scorer
    config.model.dropout_rate = 0.0

    # --- optimisation: adamw, linear warmup then cosine decay, global-norm clipping ---
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 1e-2  # peak, reached after warmup_steps
    config.optimizer.warmup_steps = 100
    config.optimizer.end_lr_factor = 0.01  # final learning rate = factor * peak
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.98
    config.optimizer.weight_decay = 1e-4
    config.optimizer.grad_clip_norm = 1.0
    config.label_smoothing = 0.0

    # --- loop ---
    config.num_train_steps = 3500
    config.log_every = 100  # train loss/accuracy to metrics.jsonl and the progress line
    config.eval_every = 1000  # eval on eval_splits; the test split is evaluated once at the end
    config.eval_splits = ("validation",)
    config.final_eval_split = "test"
    config.checkpoint_every = 1000
    config.max_checkpoints = 3  # newest checkpoints kept
    # Also keep the best `keep_best` checkpoints by `best_metric` ("split/metric" of the periodic
    # eval; "max" or "min" is better). With keep_best > 0 every eval step is also saved.
    config.keep_best = 0
    config.best_metric = "validation/exact_match"
    config.best_mode = "max"

    # --- devices (see flax_s2s/sharding.py) ---
    # The device mesh (data, model): the batch is split over `data`, vocabulary, attention heads
    # and Transformer MLP units over `model`. -1: all the remaining devices, so (-1, 1) is pure
    # data parallelism on every device. The mesh must use every device of every process.
    config.mesh_shape = (-1, 1)
    # Fully sharded data parallelism: also split each parameter (and its optimizer state) over
    # `data`, along its largest dimension `data` divides; saves memory, costs an all-gather.
    config.fsdp = False
    # Multi-process (several hosts, or several processes on one): jax.distributed.initialize
    # runs when `initialize` is True or an address is given here or in $JAX_COORDINATOR_ADDRESS.
    # Fields left unset come from the cluster environment (Cloud TPU, SLURM, Open MPI, ...).
    config.distributed = ml_collections.ConfigDict()
    config.distributed.initialize = False
    config.distributed.coordinator_address = ""  # "host:port" of process 0, the same for all
    config.distributed.num_processes = 0  # 0: from the environment
    config.distributed.process_id = -1  # this process, in [0, num_processes); -1: environment

    # --- reliability ---
    # A step with a non-finite loss or gradient norm never updates the parameters. "skip": count
    # it (train metric `nonfinite_steps`) and go on; "stop": end the run at the next log or
    # checkpoint step with an error, keeping the last good checkpoint as the newest.
    config.nonfinite_policy = "skip"
    config.debug_nonfinite_step = -1  # fault injection for tests: the loss is NaN at this step
    return config
