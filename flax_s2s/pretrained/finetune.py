"""Fine-tuning a pretrained checkpoint: a run's config filled from `config.pretrained`."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from flax_s2s.data.pretrained_tokenizer import NO_FORCED_BOS
from flax_s2s.errors import ConfigError
from flax_s2s.hf_files import PretrainedError, architecture, read_config
from flax_s2s.models.registry import MODEL_KINDS
from flax_s2s.pretrained.load import pretrained_module

DROPOUT_FROM_CHECKPOINT = -1.0  # config.model.dropout_rate: take config.json's


def configure(config: Any) -> None:
    """Fills a run's config from `config.pretrained` (a save_pretrained directory), in place:
    `model.type` and `model.pretrained_config` (config.json's text, which is all a saved config
    needs to rebuild the model) from its config.json, `model.dropout_rate` from its dropout when
    it is DROPOUT_FROM_CHECKPOINT, `vocab.type` "pretrained" (its tokenizer),
    `vocab.src_eos` (sources end in </s>, as the checkpoint read them) and, when empty,
    `forced_bos` from config.json's forced_bos_token_id (or generation_config.json's) where one
    is named. Nothing when `config.pretrained` is empty. Idempotent."""
    if not config.get("pretrained"):
        return
    directory = pathlib.Path(config.pretrained)
    hf = read_config(directory)
    kind = architecture(hf, directory)
    pretrained_module(directory)  # a config.json the model cannot take fails now, naming the file
    config.model.type = kind
    config.model.pretrained_config = json.dumps(hf, sort_keys=True)
    if config.model.dropout_rate == DROPOUT_FROM_CHECKPOINT:
        config.model.dropout_rate = float(hf.get(MODEL_KINDS[kind].hf_dropout_key, 0.1))
    config.vocab.type = "pretrained"
    config.vocab.src_eos = True  # T5's and BART's tokenizers end every text with </s>
    forced = hf.get("forced_bos_token_id", _generation_config(directory).get("forced_bos_token_id"))
    if not config.forced_bos and forced is not None:
        config.forced_bos = str(forced)


def _generation_config(directory: pathlib.Path) -> dict[str, Any]:
    """generation_config.json as a dict, {} without one (newer transformers keep
    forced_bos_token_id there rather than in config.json)."""
    path = directory / "generation_config.json"
    try:
        loaded = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PretrainedError(f"{path}: not a JSON config ({error})") from None
    return loaded if isinstance(loaded, dict) else {}


def check_config(config: Any) -> None:
    """`config.pretrained` and what `configure` fills from it agree; `src_lang` and `forced_bos`
    frame a pretrained tokenizer's texts."""
    if config.pretrained and not config.model.pretrained_config:
        raise ConfigError(f"config.pretrained={config.pretrained!r} but config.model.pretrained_config "
                          "is empty: flax_s2s.pretrained.configure(config) fills it (train.py does)")
    for field in ("src_lang", "forced_bos"):
        value = config[field]
        if value and value != NO_FORCED_BOS and config.vocab.type != "pretrained":
            raise ConfigError(f"config.{field}={value!r}: frames the texts of a pretrained "
                              f"tokenizer, but config.vocab.type={config.vocab.type!r}")
