"""Config validation reads each choice's allowed values from the module that acts on them: every
value the owner offers passes, any other is refused naming the key and the owner's values."""

import pytest
from conftest import tiny_config

from flax_s2s import checkpoint, forcing, models, mrt, schedules
from flax_s2s.data import encoding, registry, task_data, vocab
from flax_s2s.models import norms, rnn, t5, transformer
from flax_s2s.training.config import ConfigError, validate_config

OWNED_CHOICES = {
    "model.type": models.MODEL_TYPES,
    "model.cell": rnn.CELLS,
    "model.positions": transformer.POSITIONS,
    "model.attention": transformer.ATTENTIONS,
    "model.feed_forward": t5.FEED_FORWARDS,
    "model.dtype": tuple(models.DTYPES),
    "model.norm": norms.NORM_KINDS,
    "model.norm_position": norms.NORM_POSITIONS,
    "teacher_forcing.schedule": schedules.SCHEDULES,
    "teacher_forcing.choice": forcing.CHOICES,
    "teacher_forcing.mode": forcing.MODES,
    "teacher_forcing.position_schedule": schedules.POSITION_SCHEDULES,
    "teacher_forcing.position_combine": schedules.COMBINES,
    "mrt.cost": mrt.COSTS,
    "mrt.candidates": mrt.CANDIDATES,
    "task": registry.TASK_NAMES,
    "vocab.type": task_data.VOCAB_TYPES,
    "vocab.sp_model_type": vocab.SP_MODEL_TYPES,
    "too_long": encoding.TOO_LONG_POLICIES,
    "best_mode": checkpoint.BEST_MODES,
}
OWNED = [(key, name) for key, names in OWNED_CHOICES.items() for name in names]


def _refusal(key: str, value: str) -> str | None:
    """The ConfigError message for `key` set to `value` in the tiny config, or None."""
    try:
        validate_config(tiny_config(**{key: value}))
    except ConfigError as error:
        return str(error)
    return None


@pytest.mark.parametrize("key, name", OWNED)
def test_every_name_the_owner_offers_is_accepted(key, name):
    # Another check may still refuse the value's companions (a task's data_path, a schedule's k).
    refusal = _refusal(key, name)
    assert refusal is None or not refusal.startswith(f"config.{key}="), refusal


@pytest.mark.parametrize("key", OWNED_CHOICES)
def test_an_unknown_name_is_refused_naming_the_key_and_the_owners_names(key):
    refusal = _refusal(key, "no_such_name")
    assert refusal is not None and refusal.startswith(f"config.{key}='no_such_name'"), refusal
    assert all(repr(name) in refusal for name in OWNED_CHOICES[key]), refusal


def test_cudnn_attention_is_refused_in_float32():
    transformer_cudnn = {"model.type": "transformer", "model.attention": "cudnn"}
    with pytest.raises(ConfigError, match=r"model.attention='cudnn' needs 'bfloat16'"):
        validate_config(tiny_config(**transformer_cudnn))
    validate_config(tiny_config(**transformer_cudnn, **{"model.dtype": "bfloat16"}))


@pytest.mark.parametrize("overrides, devices, message", [
    ({"grad_accum_steps": 0}, None, "config.grad_accum_steps=0: must be > 0"),
    ({"grad_accum_steps": 5}, None,
     "config.batch_size=32 is not divisible by config.grad_accum_steps=5"),
    ({"grad_accum_steps": 8}, 8, "config.batch_size=32 over the mesh's data axis of 8 gives 4 rows "
     "a device, not divisible by config.grad_accum_steps=8"),
    ({"ema_decay": 1.0}, None, "config.ema_decay=1.0: must be in [0, 1)"),
    ({"early_stopping.patience": -1}, None, "config.early_stopping.patience=-1: must be >= 0"),
    ({"early_stopping.min_delta": -0.1}, None, "config.early_stopping.min_delta=-0.1: must be >= 0"),
    ({"early_stopping.patience": 2}, None,
     "config.early_stopping.patience=2 needs config.keep_best >= 1 (got 0)"),
])
def test_microbatches_average_and_early_stopping_are_checked_naming_the_fields(
    overrides, devices, message
):
    with pytest.raises(ConfigError) as error:
        validate_config(tiny_config(**overrides), devices)
    assert message in str(error.value)
    # the same fields in range pass
    validate_config(tiny_config(grad_accum_steps=4, ema_decay=0.999, keep_best=1,
                                **{"early_stopping.patience": 2}), 8)


@pytest.mark.parametrize("model_type", ["transformer", "bart", "t5"])
def test_every_attention_kind_needs_heads_that_divide_d_model(model_type):
    """BART is the Transformer in BART's layout: its heads must divide d_model too (a random BART
    with 128 / 3 once passed validation and failed later, inside the model)."""
    with pytest.raises(ConfigError, match=r"config.model.d_model=128: must be divisible by "
                                          r"config.model.num_heads=3"):
        validate_config(tiny_config(**{"model.type": model_type, "model.num_heads": 3}))


@pytest.mark.parametrize("model_type", ["transformer", "bart"])
def test_cudnn_attention_is_refused_in_float32_for_every_transformer_kind(model_type):
    with pytest.raises(ConfigError, match=r"model.attention='cudnn' needs 'bfloat16'"):
        validate_config(tiny_config(**{"model.type": model_type, "model.attention": "cudnn"}))
