"""Fine-tune a pretrained T5 (t5-small, t5-base, v1.1, mT5, ByT5) on parallel text.

`python train.py --config configs/finetune_t5.py --config.pretrained=DIR --config.data_path=DATA
--workdir WORKDIR`, where DIR is a Hugging Face `save_pretrained` directory (config.json,
model.safetensors, spiece.model) and DATA holds `{train,validation,test}.{src,tgt}`. The model,
its weights, its dropout and its tokenizer come from DIR (flax_s2s/pretrained/); every
teacher-forcing schedule of configs/default.py applies as to any run.

Defaults as in T5's own fine-tuning, for AdamW: a constant-ish learning rate of 3e-4 after a
short warmup (T5 used Adafactor at 1e-3), no label smoothing, BLEU and chrF on validation with
beam 4, the best checkpoint by chrF kept.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.task = "parallel_text"
    config.pretrained = ""  # required: --config.pretrained=DIR
    config.model.dropout_rate = -1.0  # config.json's dropout_rate (0.1 for the published models)

    config.max_src_len = 128
    config.max_tgt_len = 128
    config.bucket_boundaries = (16, 32, 64)
    config.batch_size = 32
    config.eval_batch_size = 64
    config.optimizer.learning_rate = 3e-4
    config.optimizer.warmup_steps = 500
    config.optimizer.end_lr_factor = 0.1
    config.optimizer.weight_decay = 0.01
    config.label_smoothing = 0.0

    config.num_train_steps = 10_000
    config.eval_every = 1000
    config.checkpoint_every = 1000
    config.eval_beam_size = 4
    config.text_metrics = ("bleu", "chrf")
    config.keep_best = 1
    config.best_metric = "validation/chrf"
    config.best_mode = "max"
    return config
