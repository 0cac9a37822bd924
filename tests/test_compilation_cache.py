"""Where train.py puts JAX's persistent compilation cache (flax_s2s.compilation_cache)."""

import os

from configs import default
from flax_s2s import compilation_cache


def test_default_cache_dir_is_beside_the_workdir(tmp_path, monkeypatch):
    monkeypatch.delenv(compilation_cache.ENV, raising=False)
    workdir = tmp_path / "runs" / "a"
    expected = os.path.join(str(tmp_path / "runs"), "jax_cache")
    assert compilation_cache.cache_dir("", str(workdir)) == expected
    assert compilation_cache.cache_dir("", str(workdir) + os.sep) == expected  # trailing slash


def test_explicit_dir_and_off(tmp_path):
    assert compilation_cache.cache_dir(str(tmp_path / "c"), "w") == str(tmp_path / "c")
    assert compilation_cache.cache_dir("none", "w") is None


def test_jax_environment_variable_replaces_only_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / "env"))
    assert compilation_cache.cache_dir("", str(tmp_path / "w")) == str(tmp_path / "env")
    assert compilation_cache.cache_dir(str(tmp_path / "c"), "w") == str(tmp_path / "c")
    assert compilation_cache.cache_dir("none", "w") is None
    monkeypatch.setenv(compilation_cache.ENV, "")  # set but empty: the default
    assert compilation_cache.cache_dir("", str(tmp_path / "w")) == str(tmp_path / "jax_cache")


def test_default_config_turns_the_cache_on():
    assert default.get_config().compilation_cache_dir == ""
