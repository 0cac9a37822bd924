"""Fine-tune a pretrained PEGASUS (google/pegasus-large, pegasus-xsum, pegasus-cnn_dailymail, ...)
for summarisation.

`python train.py --config configs/finetune_pegasus.py --config.pretrained=DIR --config.data_path=DATA
--workdir WORKDIR`, where DIR is a Hugging Face `save_pretrained` directory (config.json,
model.safetensors, spiece.model) and DATA holds `{train,validation,test}.{src,tgt}` (documents and
their summaries). The model, its weights and its tokenizer come from DIR (flax_s2s/pretrained/):
spiece.model's pieces behind PEGASUS's 103 reserved ids, texts ending in </s>, the decoder
starting from <pad>.

Defaults for summarisation: sources up to 512 tokens, summaries up to 128, learning rate 1e-4 (the
paper fine-tuned with Adafactor at 1e-4 to 5e-4), label smoothing 0.1, ROUGE on validation with
beam 4, the best checkpoint by ROUGE-L kept; otherwise as configs/finetune_t5.py.
"""

from configs import finetune_t5


def get_config():
    config = finetune_t5.get_config()
    config.model.dropout_rate = -1.0  # config.json's dropout (0.1 for the published models)
    config.max_src_len = 512
    config.max_tgt_len = 128
    config.bucket_boundaries = (64, 128, 256)
    config.batch_size = 8
    config.eval_batch_size = 16
    config.optimizer.learning_rate = 1e-4
    config.label_smoothing = 0.1
    config.text_metrics = ("rouge",)
    config.best_metric = "validation/rougeL"
    return config
