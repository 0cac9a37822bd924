"""Pretrained encoder-decoders from local `save_pretrained` directories, and back.

```
model, variables = load_pretrained("path/to/t5-small")   # config.json + model.safetensors
export_pretrained(variables, "path/to/t5-small", "path/to/fine-tuned")   # loads in transformers
```
- `rules`: tensor-name rules and layouts, `fill` (checkpoint -> variables) and `to_tensors` back;
- `t5`, `bart`, `marian`, `pegasus`: each architecture's rule table (`LAYOUT`);
- `load`: the module of a config.json and its variables; `export`: the way back;
- `finetune`: `configure`, a run's config from `config.pretrained`.
The tokenizer of a checkpoint is data: `flax_s2s.data.pretrained_tokenizer`.
"""

from flax_s2s.data.pretrained_tokenizer import tokenizer_vocab, tokenizer_vocabs
from flax_s2s.hf_files import CONFIG_FILE, TOKENIZER_FILES, WEIGHTS_FILE, PretrainedError, read_config
from flax_s2s.pretrained.export import export_pretrained, export_workdir
from flax_s2s.pretrained.finetune import DROPOUT_FROM_CHECKPOINT, configure
from flax_s2s.pretrained.load import load_bart, load_pretrained, load_t5, load_variables, pretrained_module
from flax_s2s.pretrained.rules import read_tensors, tensor_names
from flax_s2s.pretrained.t5 import t5_variables

__all__ = [
    "CONFIG_FILE", "DROPOUT_FROM_CHECKPOINT", "TOKENIZER_FILES", "WEIGHTS_FILE", "PretrainedError",
    "configure", "export_pretrained", "export_workdir", "load_bart", "load_pretrained", "load_t5",
    "load_variables", "pretrained_module", "read_config", "read_tensors", "t5_variables",
    "tensor_names", "tokenizer_vocab", "tokenizer_vocabs",
]
