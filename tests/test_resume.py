"""Which config changes a resume takes (flax_s2s.resume), against the saved run's config."""

import json
import re

import pytest

from configs import default
from flax_s2s import resume
from flax_s2s.errors import ConfigError


def _as_saved(config) -> dict:
    return json.loads(config.to_json())


def test_the_same_config_resumes_without_a_change():
    config = default.get_config()
    assert resume.check_resume(_as_saved(config), _as_saved(config), "w") == []


def test_schedule_intervals_mesh_and_eval_may_change_and_are_listed():
    saved = default.get_config()
    requested = default.get_config()
    requested.num_train_steps, requested.eval_every = 2 * saved.num_train_steps, 7
    requested.mesh_shape, requested.eval_beam_size = (2, 1), 4
    requested.distributed.num_processes = 2
    accepted = resume.check_resume(_as_saved(saved), _as_saved(requested), "w")
    assert accepted == [
        f"distributed.num_processes {saved.distributed.num_processes!r} -> 2",
        f"eval_beam_size {saved.eval_beam_size!r} -> 4",
        f"eval_every {saved.eval_every!r} -> 7",
        f"mesh_shape {list(saved.mesh_shape)!r} -> [2, 1]",
        f"num_train_steps {saved.num_train_steps} -> {2 * saved.num_train_steps}",
    ]


@pytest.mark.parametrize("key, value", [
    ("model.hidden_dim", 64), ("vocab.type", "sentencepiece"), ("task", "reverse"),
    ("data_path", "other.txt"), ("batch_size", 7), ("max_tgt_len", 9), ("seed", 3),
    ("optimizer.learning_rate", 0.5), ("teacher_forcing.p", 0.5), ("label_smoothing", 0.2),
])
def test_what_shapes_the_state_or_the_data_is_refused_naming_both_values(key, value):
    saved, requested = default.get_config(), default.get_config()
    node, leaf = requested, key
    if "." in key:
        parent, leaf = key.split(".")
        node = requested[parent]
    old = node[leaf]
    node[leaf] = value
    expected = f"config.{key}: saved {old!r}, requested {value!r}"
    with pytest.raises(ConfigError, match=re.escape(expected)) as raised:
        resume.check_resume(_as_saved(saved), _as_saved(requested), "runs/a")
    assert "--config.init_from=runs/a" in str(raised.value)


def test_keys_the_saved_run_did_not_have_are_not_compared():
    saved = _as_saved(default.get_config())
    del saved["model"]["attention"]  # a workdir from before the key existed
    requested = default.get_config()
    requested.model.attention = "xla"
    assert resume.check_resume(saved, _as_saved(requested), "w") == []


def test_an_average_of_the_parameters_cannot_be_turned_on_for_a_run_saved_without_one():
    saved = _as_saved(default.get_config())
    del saved["ema_decay"]  # a workdir from before the key existed: it kept no average
    requested = default.get_config()
    requested.ema_decay = 0.999
    with pytest.raises(ConfigError, match=re.escape("config.ema_decay: saved 0.0, requested 0.999")):
        resume.check_resume(saved, _as_saved(requested), "w")
    turned_off = _as_saved(default.get_config())
    turned_off["ema_decay"] = 0.999
    with pytest.raises(ConfigError, match=re.escape("config.ema_decay: saved 0.999, requested 0.0")):
        resume.check_resume(turned_off, _as_saved(default.get_config()), "w")


def test_microbatches_early_stopping_and_the_eval_weights_may_change():
    saved, requested = default.get_config(), default.get_config()
    requested.grad_accum_steps, requested.eval_with_ema = 4, False
    requested.early_stopping.patience, requested.early_stopping.min_delta = 3, 0.01
    assert resume.check_resume(_as_saved(saved), _as_saved(requested), "w") == [
        "early_stopping.min_delta 0.0 -> 0.01", "early_stopping.patience 0 -> 3",
        "eval_with_ema True -> False", "grad_accum_steps 1 -> 4",
    ]


def test_a_path_spelled_relative_or_absolute_is_the_same_path(tmp_path, monkeypatch):
    from flax_s2s.data.registry import REPO_ROOT
    from flax_s2s.training.setup import RESUME_PATHS

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "t0").mkdir(parents=True)
    (tmp_path / "latest").symlink_to(tmp_path / "runs" / "t0")
    saved, requested = default.get_config(), default.get_config()
    saved.distill.teachers = (str(tmp_path / "runs" / "t0"), str(tmp_path / "runs" / "t1"))
    requested.distill.teachers = ("latest", "runs/../runs/t1")  # relative to the working directory
    saved.data_path = "data/lexicon.txt"  # relative to the repository root
    requested.data_path = str(REPO_ROOT / "data" / "lexicon.txt")
    assert resume.check_resume(_as_saved(saved), _as_saved(requested), "w", RESUME_PATHS) == []

    requested.distill.teachers = ("runs/t1", "runs/t0")  # the same two, in another order
    with pytest.raises(ConfigError, match=re.escape("config.distill.teachers: saved [")):
        resume.check_resume(_as_saved(saved), _as_saved(requested), "w", RESUME_PATHS)
    requested.distill.teachers = saved.distill.teachers
    monkeypatch.chdir(tmp_path / "runs")  # data paths do not depend on the working directory
    assert resume.check_resume(_as_saved(saved), _as_saved(requested), "w", RESUME_PATHS) == []
    requested.data_path = "data/other.txt"
    with pytest.raises(ConfigError, match=re.escape("config.data_path: saved 'data/lexicon.txt'")):
        resume.check_resume(_as_saved(saved), _as_saved(requested), "w", RESUME_PATHS)
