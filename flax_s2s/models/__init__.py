"""Models behind one seam (`seam.Seq2Seq`: encode / init_cache / step / forward), one record per
kind (`registry`), and the kinds' modules: `rnn` (LSTM/GRU with additive attention),
`attention` and `transformer_layers` under `transformer`, `t5`, `bart` (BART's layout of the
Transformer), `norms`, `unroll`.

```
model = build_model(config, src_vocab_size, tgt_vocab_size, special_tokens)
logits = model.forward(variables, model.encode(variables, src_tokens), decoder_inputs(tgt, bos))
```
"""

from flax_s2s.models.registry import (
    DTYPES,
    MODEL_KINDS,
    MODEL_TYPES,
    ModelKind,
    build_model,
    module_config,
    module_from_hf_config,
)
from flax_s2s.models.seam import Seq2Seq, Variables, decoder_inputs

__all__ = [
    "DTYPES", "MODEL_KINDS", "MODEL_TYPES", "ModelKind", "Seq2Seq", "Variables", "build_model",
    "decoder_inputs", "module_config", "module_from_hf_config",
]
