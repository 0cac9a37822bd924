"""CMUdict grapheme-to-phoneme with a bidirectional LSTM encoder and additive attention.

Trains on the standard training split g014b2b.train (WORD<TAB>PHONES, no stress marks); 5% of its
words are carved out as the validation split, on which WER and PER are reported (a word is right
when the output equals any of its pronunciations). The file is expected at
`../shared/data/g2p/g014b2b.train` relative to the repository root; point elsewhere with
`--config.data_path=/path/to/file` (absolute, or relative to the repository root). Evaluate a
trained workdir on any lexicon file with `python -m flax_s2s.cli.evaluate --workdir DIR --data FILE`.

This is the base of the G2P configs (data, buckets, metrics) and a quick run: with
`--config.num_train_steps=5000` (10 minutes) it reached 33.4% validation WER / 8.0% PER. The
measured recipes for the accuracy targets are `configs/g2p_gru.py` (one hour on 2 CPU cores) and
`configs/g2p_gru_large.py` (about four hours).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.task = "cmudict_g2p"
    config.data_path = "../shared/data/g2p/g014b2b.train"
    config.max_src_len = 24  # the longest word of the split has 22 letters
    config.max_tgt_len = 24  # the longest pronunciation has 20 phones, + EOS
    config.vocab.src_separator = ""  # letters
    config.vocab.tgt_separator = " "  # ARPAbet phones
    # Words are short (median 7 letters) but the longest pad every batch to 24 steps; buckets cut
    # 97% of batches to 8 or 12 steps (about 3x the words/s, bench/g2p_buckets.py). Compiled
    # shapes: 3 train steps, 1 eval step and 1 decode for WER/PER ([eval_batch_size, 24] each).
    config.bucket_boundaries = (8, 12)
    config.batch_size = 64
    config.eval_batch_size = 512

    config.model.emb_dim = 64
    config.model.hidden_dim = 128  # ~3x the words/s of 256 on 2 CPU cores (bench/g2p_buckets.py)
    config.model.attention_dim = 128
    config.model.dropout_rate = 0.1

    config.optimizer.learning_rate = 3e-3
    config.optimizer.warmup_steps = 500
    config.num_train_steps = 30_000
    config.log_every = 200
    config.eval_every = 2_000
    config.checkpoint_every = 2_000
    config.eval_splits = ("validation",)
    config.final_eval_split = "validation"  # the test half of the split is held back
    config.text_metrics = ("wer", "per")
    return config
