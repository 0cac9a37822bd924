"""Fine-tune a pretrained Marian translation model (the opus-mt checkpoints, Helsinki-NLP/opus-mt-*)
on parallel text in its language pair.

`python train.py --config configs/finetune_marian.py --config.pretrained=DIR --config.data_path=DATA
--workdir WORKDIR`, where DIR is a Hugging Face `save_pretrained` directory (config.json,
model.safetensors, source.spm, target.spm, vocab.json) and DATA holds
`{train,validation,test}.{src,tgt}`. The model, its weights and its tokenizer come from DIR
(flax_s2s/pretrained/): sources through source.spm, targets through target.spm, both in
vocab.json's ids and ending in </s>; the decoder starts from <pad>. A multilingual-target model
reads its target language's code (">>fra<<") at the start of each source line.

Defaults as in the usual opus-mt fine-tuning: learning rate 2e-5, label smoothing 0.1; otherwise
as configs/finetune_t5.py.
"""

from configs import finetune_t5


def get_config():
    config = finetune_t5.get_config()
    config.model.dropout_rate = -1.0  # config.json's dropout (0.1 for the opus-mt models)
    config.optimizer.learning_rate = 2e-5
    config.label_smoothing = 0.1
    return config
