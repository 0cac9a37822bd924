"""Summarising Python's standard library: a function's code -> the first sentence of its docstring,
with a small pre-LayerNorm Transformer and SentencePiece on both sides.

The data are built on any machine from the Python that runs it (nothing is downloaded):
`python bench/code2doc.py` writes `data/code2doc/{train,validation,test}.jsonl` (JSON lines with
"source" and "target") and `meta.json` (the Python version, counts, hashes). Splits are by
top-level package, so test functions come from modules never seen in training; the baselines to
beat are `python bench/code2doc_baselines.py`. Then

    python train.py --config configs/code2doc_transformer.py --workdir runs/code2doc

Sources are long (median 56 pieces, p90 about 300, the longest over 2500: bench/RESULTS.md), so
`too_long="truncate"` cuts a training source to max_src_len rather than dropping it, and every
validation and test function is decoded (its source cut if it must be) and scored with ROUGE
against its whole docstring sentence. SentencePiece folds the code's newlines and indentation into
single spaces.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.task = "parallel_text"
    config.data_path = "data/code2doc"

    config.vocab.type = "sentencepiece"
    config.vocab.sp_model_type = "unigram"
    # 3.7k training functions: 4000 source pieces cost 5% longer sources than 8000 (median 56 vs
    # 54 pieces) for half the rarely seen pieces; the targets' vocabulary stops near 3300 pieces
    # either way (the corpus has no more).
    config.vocab.sp_vocab_size = 4000

    # Source pieces: median 56, p75 118, p90 ~300 (validation). 256 keeps 88% of sources whole;
    # the rest are cut at the end (a function's signature and first lines come first).
    config.max_src_len = 256
    config.max_tgt_len = 32  # target pieces + EOS: p95 28; longer targets are cut in training only
    config.too_long = "truncate"
    config.bucket_boundaries = (64, 128)  # shapes 64, 128, 256: bench/RESULTS.md
    config.batch_size = 32
    config.eval_batch_size = 128

    config.model.type = "transformer"
    config.model.norm = "layer"
    config.model.norm_position = "pre"
    config.model.d_model = 256
    config.model.num_heads = 4
    config.model.mlp_dim = 1024
    config.model.num_encoder_layers = 3
    config.model.num_decoder_layers = 3
    config.model.tie_output = True
    config.model.dropout_rate = 0.2
    config.label_smoothing = 0.1

    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 500
    config.num_train_steps = 6_000
    config.log_every = 100
    config.eval_every = 1_000
    config.checkpoint_every = 1_000
    config.eval_splits = ("validation",)
    config.final_eval_split = "test"
    config.text_metrics = ("rouge",)
    return config
