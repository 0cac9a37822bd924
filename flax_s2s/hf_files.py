"""A Hugging Face `save_pretrained` directory's files: their names, and config.json read as a dict.

The pretrained models (`flax_s2s.pretrained`) and their tokenizers (`flax_s2s.data`) both read
these files; neither imports the other, so this leaf holds what they share.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from flax_s2s.errors import FileFormatError
from flax_s2s.special_tokens import PRETRAINED_DEFAULTS

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# What a save_pretrained directory may hold beside the weights: copied as they are on export.
TOKENIZER_FILES = ("spiece.model", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                   "merges.txt", "special_tokens_map.json", "generation_config.json",
                   "sentencepiece.bpe.model", "source.spm", "target.spm")  # mBART's; Marian's
ARCHITECTURES = tuple(PRETRAINED_DEFAULTS)  # the config.json `model_type`s that flax_s2s loads


class PretrainedError(FileFormatError):
    """A checkpoint directory that does not fit the model; the message names what and where."""


def read_config(directory: str | pathlib.Path) -> dict[str, Any]:
    """config.json of a `save_pretrained` directory, as a dict."""
    path = pathlib.Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise PretrainedError(f"{path}: no such file (a save_pretrained directory has one)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PretrainedError(f"{path}: not a JSON config ({error})") from None
    if not isinstance(config, dict):
        raise PretrainedError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def architecture(hf: dict[str, Any], directory: str | pathlib.Path) -> str:
    """config.json's model_type, when it is one flax_s2s loads."""
    kind = hf.get("model_type")
    if kind not in ARCHITECTURES:
        raise PretrainedError(f"{pathlib.Path(directory) / CONFIG_FILE}: model_type {kind!r} is not "
                              f"one of {list(ARCHITECTURES)}")
    return kind
