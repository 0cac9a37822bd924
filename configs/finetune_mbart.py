"""Fine-tune a pretrained mBART (mbart-large-cc25, mbart-large-50, the mBART-50 translation
models) on parallel text in one language pair.

`python train.py --config configs/finetune_mbart.py --config.pretrained=DIR --config.data_path=DATA
--config.src_lang=en_XX --config.forced_bos=ro_RO --workdir WORKDIR`, where DIR is a Hugging Face
`save_pretrained` directory (config.json, model.safetensors, sentencepiece.bpe.model and its
tokenizer_config.json) and DATA holds `{train,validation,test}.{src,tgt}`. The model, its weights
and its tokenizer come from DIR (flax_s2s/pretrained/). Sources read [src_lang] X </s> (mBART-50's
tokenizer; X </s> [src_lang] with mbart-large-cc25's), targets [forced_bos] X </s> with the
decoder starting from </s>, and decoding forces forced_bos as the first token (the decode
command's --forced_bos overrides it).

Defaults as in mBART's fine-tuning (Liu et al. 2020): learning rate 3e-5 after 2500 warm-up
steps, label smoothing 0.2; otherwise as configs/finetune_t5.py.
"""

from configs import finetune_t5


def get_config():
    config = finetune_t5.get_config()
    config.model.dropout_rate = -1.0  # config.json's dropout (0.1 for the published models)
    config.src_lang = "en_XX"  # the source language's code
    config.forced_bos = "ro_RO"  # the target language's code: every output's first token
    config.optimizer.learning_rate = 3e-5
    config.optimizer.warmup_steps = 2500
    config.label_smoothing = 0.2
    return config
