"""Fine-tune a pretrained BART (bart-base, bart-large) on parallel text.

`python train.py --config configs/finetune_bart.py --config.pretrained=DIR --config.data_path=DATA
--workdir WORKDIR`, where DIR is a Hugging Face `save_pretrained` directory (config.json,
model.safetensors, tokenizer.json) and DATA holds `{train,validation,test}.{src,tgt}`. As
configs/finetune_t5.py, with BART's fine-tuning defaults: learning rate 3e-5, label smoothing
0.1, weight decay 0.01.
"""

from configs import finetune_t5


def get_config():
    config = finetune_t5.get_config()
    config.model.dropout_rate = -1.0  # config.json's dropout (0.1 for bart-base and bart-large)
    config.optimizer.learning_rate = 3e-5
    config.label_smoothing = 0.1
    return config
