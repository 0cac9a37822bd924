"""Summarising Python's standard library: a function's code -> the first sentence of its docstring,
with a small pre-LayerNorm Transformer and SentencePiece on both sides.

The data are built on any machine from the Python that runs it (nothing is downloaded):
`python bench/code2doc.py` writes `data/code2doc/{train,validation,test}.jsonl` (JSON lines with
"source" and "target") and `meta.json` (the Python version, counts, hashes). Splits are by
top-level package, so test functions come from modules never seen in training; the baselines to
beat are `python bench/code2doc_baselines.py`. Then

    python train.py --config configs/code2doc_transformer.py --workdir runs/code2doc

Sources are long (median 58 pieces, p90 about 300, the longest 2757: bench/RESULTS.md), so
`too_long="truncate"` cuts a training source to max_src_len rather than dropping it, and every
validation and test function is decoded (its source cut if it must be) and scored with ROUGE
against its whole docstring sentence. SentencePiece folds the code's newlines and indentation into
single spaces.

Sized for 2 CPU cores: 0.81 steps/s measured with the train step alone on a busy Intel Xeon
(`bench/code2doc_speed.py`), so 2000 steps (about 17 epochs) and the evals take about 45 minutes
(a run on a shared machine took 78). Test ROUGE-L 18.6 greedy, below the function-name baseline's
26.0: the pipeline's recipe, not a strong summariser (bench/RESULTS.md).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.task = "parallel_text"
    config.data_path = "data/code2doc"

    config.vocab.type = "sentencepiece"
    config.vocab.sp_model_type = "unigram"
    # 3.7k training functions: 4000 source pieces make sources a little longer than 8000 (on
    # validation median 56 vs 54 pieces, p90 299 vs 277) with half the rarely seen pieces; the
    # targets' vocabulary stops near 3300 pieces either way (the corpus holds no more).
    config.vocab.sp_vocab_size = 4000

    # Source pieces: median 56, p75 118, p90 ~300 (validation). 256 keeps 88% of sources whole;
    # the rest are cut at the end (a function's signature and first lines come first).
    config.max_src_len = 256
    config.max_tgt_len = 32  # target pieces + EOS: p95 28; longer targets are cut in training only
    config.too_long = "truncate"
    # Length buckets (shapes 64, 128, 256) cut padding from 63% to 34%, 1.4x the examples/s of
    # none. Packing (rows of 256 x 32) ties with them: its rows fill on the target side, about
    # two examples a row; with 64-token target rows it carries 2.6x the examples per step at no
    # better examples/s, and doubles the length evals decode to (max_tgt_len). bench/RESULTS.md.
    config.bucket_boundaries = (64, 128)
    config.batch_size = 32
    config.eval_batch_size = 128

    config.model.type = "transformer"
    config.model.norm = "layer"
    config.model.norm_position = "pre"
    config.model.d_model = 256
    config.model.num_heads = 4
    config.model.mlp_dim = 1024
    config.model.num_encoder_layers = 2
    config.model.num_decoder_layers = 2
    config.model.tie_output = True
    config.model.dropout_rate = 0.2
    config.label_smoothing = 0.1

    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 300
    config.num_train_steps = 2_000
    config.log_every = 100
    config.eval_every = 500
    config.checkpoint_every = 500
    config.eval_splits = ("validation",)
    config.final_eval_split = "test"
    config.text_metrics = ("rouge",)
    return config
