"""JAX's persistent compilation cache for `train.py`: a repeated or resumed run loads its compiled
train, eval and decode steps from disk instead of compiling them again."""

from __future__ import annotations

import os

import jax

OFF = "none"


ENV = "JAX_COMPILATION_CACHE_DIR"  # JAX's own variable for its cache directory


def cache_dir(setting: str, workdir: str) -> str | None:
    """The cache directory for `config.compilation_cache_dir`: "" gives `$JAX_COMPILATION_CACHE_DIR`
    where that is set (JAX's own setting wins over a default), else `<workdir>/../jax_cache`
    (shared by runs side by side, like the TFDS data); "none" gives None (no cache)."""
    if setting == OFF:
        return None
    if setting:
        return setting
    if os.environ.get(ENV):
        return os.environ[ENV]
    parent = os.path.dirname(os.path.abspath(workdir.rstrip(os.sep)))
    return os.path.join(parent, "jax_cache")


def enable(setting: str, workdir: str) -> str | None:
    """Turns the persistent cache on (call before anything compiles); returns its directory.

    JAX decides once per process, at the first compile, whether to use the cache, so this must
    run first. Executables that compiled in under a second are not stored (JAX's default
    `jax_persistent_cache_min_compile_time_secs`): loading them would save little.
    """
    directory = cache_dir(setting, workdir)
    if directory is not None:
        jax.config.update("jax_compilation_cache_dir", directory)
    return directory
