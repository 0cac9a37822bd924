"""Synthetic seq2seq tasks as TFDS builders, generated in code (nothing is downloaded).

Each builder writes array_record files, read back with `builder.as_data_source(split)`, which
needs no TensorFlow.
"""

from __future__ import annotations

import fcntl
import os
import string
import zlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from flax_s2s.errors import FileFormatError, read_json_object

_TEXT_PAIR = tfds.features.FeaturesDict({"src": tfds.features.Text(), "tgt": tfds.features.Text()})


def text_pair_info(builder: tfds.core.DatasetBuilder) -> tfds.core.DatasetInfo:
    """The info of a builder of (src text, tgt text) pairs, described by its docstring: every
    task here, and the lexicon builders of `cmudict_g2p`."""
    return tfds.core.DatasetInfo(
        builder=builder,
        description=builder.__doc__,
        features=_TEXT_PAIR,
        supervised_keys=("src", "tgt"),
    )


def prepare_once(
    builder_class: type[tfds.core.DatasetBuilder], data_dir: str,
    config: str | tfds.core.BuilderConfig | None = None,
) -> tfds.core.DatasetBuilder:
    """A `builder_class` (with `config`) under `data_dir`, prepared in array_record files, under
    an exclusive lock on a file beside the dataset's directory: runs side by side that prepare
    the same dataset at once (their `tfds/` directory is shared) take turns, so the first writes
    it and the others find it written, where TFDS alone would have the second crash renaming its
    copy onto the first's. The builder is made once the lock is held, since a builder reads what
    is prepared when it is made; metadata that is not what TFDS wrote raises FileFormatError
    naming the file (`check_metadata`)."""
    directory = prepared_dir(builder_class, data_dir, config)
    lock_path = f"{directory}.prepare.lock"
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        check_metadata(directory, f"delete {directory} and it is prepared again")
        builder = builder_class(data_dir=data_dir, file_format="array_record",
                                **({"config": config} if config is not None else {}))
        builder.download_and_prepare()
    return builder


def prepared_dir(
    builder_class: type[tfds.core.DatasetBuilder], data_dir: str,
    config: str | tfds.core.BuilderConfig | None = None,
) -> str:
    """Where TFDS keeps a prepared dataset: `data_dir/name[/config]/version`."""
    config_name = getattr(config, "name", config)
    return os.path.join(os.path.abspath(data_dir), builder_class.name,
                        *([config_name] if config_name else []), str(builder_class.VERSION))


# A prepared dataset's metadata files and the keys TFDS always writes in them.
METADATA_KEYS = {"dataset_info.json": ("name", "version"), "features.json": ("pythonClassName",)}


def check_metadata(directory: str, remedy: str) -> None:
    """Raises FileFormatError naming the first metadata file of the prepared dataset in
    `directory` (`METADATA_KEYS`) that is not the JSON object TFDS writes, with the line where
    its JSON breaks and `remedy` (how to get a good one). TFDS's own errors for these name
    neither the file nor a way out. Files not there (nothing prepared yet) are left to TFDS."""
    for name, keys in METADATA_KEYS.items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        what = f"the JSON object of metadata TFDS writes when it prepares a dataset ({remedy})"
        metadata = read_json_object(path, what)
        missing = [key for key in keys if key not in metadata]
        if missing:
            raise FileFormatError(f"{path}: no {missing} in it; expected {what}")


class Addition(tfds.core.GeneratorBasedBuilder):
    """"a+b" -> "a+b evaluated", operands 0..999 (as in Flax's examples/seq2seq).

    The 10^6 problems are permuted once with a fixed seed and cut into disjoint splits, so no test
    problem is ever seen in training.
    """

    VERSION = tfds.core.Version("1.0.0")
    MAX_OPERAND = 999
    SPLIT_SIZES = {"test": 2_000, "validation": 2_000, "train": 200_000}
    _PERMUTATION_SEED = 20261126

    def _info(self) -> tfds.core.DatasetInfo:
        return text_pair_info(self)

    def _split_generators(self, dl_manager):
        del dl_manager  # generated in code
        n = self.MAX_OPERAND + 1
        problems = np.random.default_rng(self._PERMUTATION_SEED).permutation(n * n)
        splits, start = {}, 0
        for name, size in self.SPLIT_SIZES.items():
            splits[name] = self._generate_examples(problems[start : start + size])
            start += size
        return splits

    def _generate_examples(self, problems: np.ndarray) -> Iterator[tuple[int, dict]]:
        n = self.MAX_OPERAND + 1
        for problem in problems.tolist():
            a, b = divmod(problem, n)
            yield problem, {"src": f"{a}+{b}", "tgt": str(a + b)}


class Reverse(tfds.core.GeneratorBasedBuilder):
    """"abc" -> "cba": strings of 1 to 12 lowercase letters, the length uniform, then the letters.

    A string's split is a function of the string (its CRC-32), so the splits are disjoint by
    construction; strings are drawn from a fixed seed until every split is full, repeats skipped.
    """

    VERSION = tfds.core.Version("1.0.0")
    ALPHABET = string.ascii_lowercase
    MAX_LENGTH = 12
    SPLIT_SIZES = {"test": 2_000, "validation": 2_000, "train": 96_000}
    _SEED = 20261127

    def _info(self) -> tfds.core.DatasetInfo:
        return text_pair_info(self)

    @staticmethod
    def split_of(text: str) -> str:
        """2% test, 2% validation, 96% train: proportional to the split sizes."""
        bucket = zlib.crc32(text.encode()) % 50
        return "test" if bucket == 0 else "validation" if bucket == 1 else "train"

    def _split_generators(self, dl_manager):
        del dl_manager  # generated in code
        splits: dict[str, list[str]] = {name: [] for name in self.SPLIT_SIZES}
        seen: set[str] = set()
        rng = np.random.default_rng(self._SEED)
        letters = np.array(list(self.ALPHABET))
        while any(len(splits[name]) < size for name, size in self.SPLIT_SIZES.items()):
            length = int(rng.integers(1, self.MAX_LENGTH + 1))
            text = "".join(letters[rng.integers(0, len(letters), length)])
            name = self.split_of(text)
            if text not in seen and len(splits[name]) < self.SPLIT_SIZES[name]:
                seen.add(text)
                splits[name].append(text)
        return {name: self._generate_examples(texts) for name, texts in splits.items()}

    def _generate_examples(self, texts: list[str]) -> Iterator[tuple[str, dict]]:
        for text in texts:
            yield text, {"src": text, "tgt": text[::-1]}


class RunningSum(tfds.core.GeneratorBasedBuilder):
    """"3141..." -> "3485...": the running sum mod 10 of 40 to 50 digits, one digit out per digit
    in (y_t = (x_1 + ... + x_t) mod 10), so every output is 40 tokens or longer.

    Built to let errors compound: under teacher forcing the gold previous output makes each step a
    one-digit addition (y_t = y_{t-1} + x_t), so a model may lean on the token it reads; decoding,
    it reads its own, and one wrong digit then shifts every digit after it, unless the decoder
    keeps the sum in its state. A string's split is a function of the string (its CRC-32), so the
    splits are disjoint by construction.
    """

    VERSION = tfds.core.Version("1.0.0")
    MIN_LENGTH, MAX_LENGTH = 40, 50
    SPLIT_SIZES = {"test": 2_000, "validation": 1_000, "train": 100_000}
    _SEED = 20261201

    def _info(self) -> tfds.core.DatasetInfo:
        return text_pair_info(self)

    @staticmethod
    def split_of(text: str) -> str:
        """2% test, 1% validation, the rest train."""
        bucket = zlib.crc32(text.encode()) % 100
        return "test" if bucket < 2 else "validation" if bucket == 2 else "train"

    @staticmethod
    def running_sum(digits: str) -> str:
        return "".join(str(total % 10) for total in np.cumsum([int(d) for d in digits]))

    def _split_generators(self, dl_manager):
        del dl_manager  # generated in code
        splits: dict[str, list[str]] = {name: [] for name in self.SPLIT_SIZES}
        rng = np.random.default_rng(self._SEED)
        while any(len(splits[name]) < size for name, size in self.SPLIT_SIZES.items()):
            length = int(rng.integers(self.MIN_LENGTH, self.MAX_LENGTH + 1))
            text = "".join(map(str, rng.integers(0, 10, length)))
            name = self.split_of(text)
            if len(splits[name]) < self.SPLIT_SIZES[name]:  # 10^40 strings: repeats never happen
                splits[name].append(text)
        return {name: self._generate_examples(texts) for name, texts in splits.items()}

    def _generate_examples(self, texts: list[str]) -> Iterator[tuple[str, dict]]:
        for text in texts:
            yield text, {"src": text, "tgt": self.running_sum(text)}


TASKS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "addition": Addition, "reverse": Reverse, "running_sum": RunningSum,
}


def prepare(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """Generates (once) and returns the builder for task `name`, stored under `data_dir`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    tfds.disable_progress_bar()  # its per-split bars are noise in logs
    return prepare_once(TASKS[name], data_dir)
