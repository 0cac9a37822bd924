"""Parallel text: a directory of local text files (`text_files`: JSON lines, TSV, CSV or
line-aligned `.src` / `.tgt`), or a TFDS translation dataset prepared elsewhere.

Local files are read directly rather than through a TFDS builder: they are already one example a
line, and a prepared copy would go stale whenever the user edits the files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from tensorflow_datasets.core import constants as tfds_constants
from tensorflow_datasets.core import read_only_builder

from flax_s2s.data import text_files
from flax_s2s.data.tasks import check_metadata
from flax_s2s.errors import FileFormatError


def read_parallel_dir(
    directory: str | Path, splits: Sequence[str], fields: text_files.TextFields = text_files.DEFAULT_FIELDS
) -> dict[str, list[tuple[str, str]]]:
    """Each split's (source, target) pairs from its file(s) in `directory`: `{split}.jsonl`,
    `.tsv`, `.csv`, or `.src` with `.tgt` (`text_files`, which names a bad line). A split
    without a single pair raises FileFormatError."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"parallel text directory {directory} does not exist")
    texts = {}
    for split in splits:
        texts[split] = list(text_files.read_split_pairs(directory, split, fields))
        if not texts[split]:
            names = ", ".join(path.name for path in text_files.split_files(directory, split))
            raise FileFormatError(f"{directory}: split {split!r} ({names}) holds no example")
    return texts


def read_tfds_translation(
    name: str,
    data_dir: str | None,
    splits: Sequence[str],
    src_key: str = "",
    tgt_key: str = "",
) -> dict[str, list[tuple[str, str]]]:
    """(source, target) pairs of a TFDS dataset such as "wmt14_translate/de-en", already prepared
    under `data_dir` in the array_record format. Nothing is downloaded or prepared here.

    The source and target features default to the dataset's supervised keys (("de", "en") for
    wmt14_translate/de-en); `src_key` / `tgt_key` override them, e.g. to translate the other way.
    """
    _check_tfds_metadata(name, data_dir)
    try:
        # Reads the prepared files and their metadata only: no dataset code, no download.
        builder = read_only_builder.builder_from_files(name, data_dir=data_dir or None)
    except Exception as error:  # DatasetNotFoundError and friends; the hint matters more
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared under data dir {data_dir or '(TFDS default)'}: "
            f"flax_s2s never downloads; prepare it where TensorFlow is available with "
            f"`tfds build {name} --file_format=array_record --data_dir=DIR` ({error})"
        ) from None
    file_format = str(builder.info.file_format.value if builder.info.file_format else "")
    if file_format != "array_record":
        raise ValueError(
            f"TFDS dataset {name!r} is stored as {file_format or 'unknown'}; reading it without "
            f"TensorFlow needs array_record: rebuild it with --file_format=array_record"
        )
    keys = builder.info.supervised_keys or ("", "")
    src_key, tgt_key = src_key or keys[0], tgt_key or keys[1]
    features = list(builder.info.features.keys()) if hasattr(builder.info.features, "keys") else []
    for role, key in (("source", src_key), ("target", tgt_key)):
        if key not in features:
            raise ValueError(
                f"TFDS dataset {name!r}: {role} key {key!r} is not one of its features {features}"
            )
    missing = [split for split in splits if split not in builder.info.splits]
    if missing:
        raise ValueError(
            f"TFDS dataset {name!r} has no split(s) {missing}; it has {list(builder.info.splits)}"
        )
    return {split: _read_tfds_split(builder, split, src_key, tgt_key) for split in splits}


def _check_tfds_metadata(name: str, data_dir: str | None) -> None:
    """The metadata of the version `builder_from_files` reads (the one `name` gives after ":",
    else the newest prepared), checked by `tasks.check_metadata`."""
    dataset, _, version = name.partition(":")
    root = Path(os.path.expanduser(data_dir or tfds_constants.DATA_DIR)) / dataset
    if not version:
        prepared = [d.name for d in root.glob("*") if (d / "dataset_info.json").is_file()
                    and re.fullmatch(r"\d+\.\d+\.\d+", d.name)]
        version = max(prepared, key=lambda v: tuple(map(int, v.split("."))), default="")
    if version:
        check_metadata(str(root / version), f"rebuild it with `tfds build {dataset} "
                                            f"--file_format=array_record --data_dir=DIR`")


def _read_tfds_split(builder, split: str, src_key: str, tgt_key: str) -> list[tuple[str, str]]:
    source = builder.as_data_source(split)
    records = source.__getitems__(list(range(len(source))))
    return [(_text(record, src_key), _text(record, tgt_key)) for record in records]


def _text(record: dict, key: str) -> str:
    value = record[key]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
