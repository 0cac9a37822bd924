"""Every shipped config passes validation: a typo in a config fails here, not after data loads."""

import glob
import importlib
import os

import pytest
from conftest import ROOT

from flax_s2s import pretrained
from flax_s2s.training.config import validate_config

# fine-tuning configs need a checkpoint directory and data: the tiny fixtures stand in
FINE_TUNED = {"finetune_t5": "t5_v1_0", "finetune_bart": "bart", "finetune_mbart": "mbart",
              "finetune_marian": "marian", "finetune_pegasus": "pegasus"}

CONFIGS = sorted(
    os.path.splitext(os.path.basename(path))[0]
    for path in glob.glob(os.path.join(ROOT, "configs", "*.py"))
    if not path.endswith("__init__.py")
)


def test_configs_are_found():
    assert {"default", "addition_lstm", "g2p_lstm", "g2p_transformer", *FINE_TUNED} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    if name in FINE_TUNED:
        assert config.pretrained == "" and config.model.dropout_rate == pretrained.DROPOUT_FROM_CHECKPOINT
        config.pretrained = os.path.join(ROOT, "tests", "fixtures", FINE_TUNED[name])
        config.data_path = "tests"
        pretrained.configure(config)
        assert config.model.type == name.split("_")[1] and config.model.dropout_rate == 0.1
    data_path = config.get("data_path", "")
    if data_path and not os.path.exists(os.path.join(ROOT, data_path)):
        pytest.skip(f"{data_path} is not here")
    validate_config(config)
