"""The train split's token ids on disk (`config.token_store`): tokenized once, streaming, into
`.npy` files in the workdir, which training reads row by row, so that a corpus larger than memory
trains in the memory of a small one.

    WORKDIR/tokens/train-<key>/manifest.json   what the store was built from, its row count
    WORKDIR/tokens/train-<key>/src.npy         [rows, max_src_len] int32, padded with src pad
    WORKDIR/tokens/train-<key>/tgt.npy         [rows, max_tgt_len] int32, padded with tgt pad

The text is read pair by pair and tokenized `CHUNK_PAIRS` pairs at a time by `pipeline.tokenize`
(the same ids, the same too_long policy as a split tokenized whole, in the same order), each chunk
appended to the files. `<key>` is a hash of what the ids depend on (`store_key`: the train
files' sizes and modification times or the task's data settings, both vocabularies, the maximum
lengths, the too_long policy, EOS on sources, this format's version): when any changes, the key
does, the stale store is removed and a new one built. A build writes into a temporary
directory and renames it into place when complete, so an interrupted build leaves no store to be
read; what it left is removed by the next build. Only directories this module made are removed:
those holding its manifest, and its temporary ones whose process has ended.

The split comes back as an `Examples` over read-only `np.memmap`s, without its texts: the
pipeline's batches, buckets and packed rows read it through `examples.take_rows`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import ml_collections
import numpy as np

from flax_s2s.data import pipeline, text_files
from flax_s2s.data.examples import Examples
from flax_s2s.data.registry import read_task_texts, resolve_data_path
from flax_s2s.data.vocab import Vocab, save_vocab
from flax_s2s.errors import ConfigError, DataError, FileFormatError

FORMAT = "flax_s2s token store 2"  # changes when the layout or what the key covers does
DIRECTORY = "tokens"  # under the workdir
MANIFEST = "manifest.json"
CHUNK_PAIRS = 10_000
HEADER_BYTES = 128  # each .npy file's header, padded to this size (numpy aligns data to 64)
SPLIT = "train"
# The config fields that say where a task's text comes from (with the files they name).
SOURCE_FIELDS = ("task", "data_path", "strip_stress", "tfds_name", "tfds_data_dir",
                 "tfds_src_key", "tfds_tgt_key", "src_field", "tgt_field", "context_field",
                 "turn_separator", "skip_bad_lines")


def check_config(config: ml_collections.ConfigDict) -> None:
    """config.token_store: True or False."""
    if not isinstance(config.token_store, bool):
        raise ConfigError(f"config.token_store={config.token_store!r}: must be True or False")


def stores_train(config: ml_collections.ConfigDict, splits: Iterable[str]) -> bool:
    """Whether the train split among `splits` comes from the store: `config.token_store`, and
    the split is not evaluated (scoring needs its texts, which the store does not keep)."""
    evaluated = (*config.get("eval_splits", ()), config.get("final_eval_split", ""))
    return bool(config.get("token_store", False)) and SPLIT in splits and SPLIT not in evaluated


class TrainText:
    """The train split's (source, target) pairs, iterable as often as needed: streamed from
    its file(s) for "parallel_text" (`text_files.read_split_pairs`), the task's reader otherwise (those tasks'
    splits are read whole, once)."""

    def __init__(self, config: ml_collections.ConfigDict, data_dir: str) -> None:
        self.config, self.data_dir = config, data_dir
        self._pairs: list[tuple[str, str]] | None = None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        if self.config.task == "parallel_text":  # streamed, line by line
            return text_files.read_split_pairs(resolve_data_path(self.config.data_path), SPLIT,
                                               text_files.TextFields.from_config(self.config))
        if self._pairs is None:
            self._pairs = read_task_texts(self.config, self.data_dir, (SPLIT,))[SPLIT]
        return iter(self._pairs)


# --- What a store is built from -----------------------------------------------------------


def _files_key(paths: Iterable[Path]) -> list[dict]:
    stats = [(path.resolve(), path.stat()) for path in paths]
    return [{"path": str(p), "bytes": s.st_size, "mtime_ns": s.st_mtime_ns} for p, s in stats]


def _source_key(config: ml_collections.ConfigDict, data_dir: str) -> dict:
    """The task's data settings and the size and modification time of each file they name; for a
    task prepared under `data_dir` (a builder), that directory."""
    key = {field: config[field] for field in SOURCE_FIELDS}
    path = resolve_data_path(config.data_path) if config.data_path else None
    files = (sorted(path.glob(f"{SPLIT}.*")) if path and path.is_dir()
             else [path] if path and path.is_file() else [])
    key["files"] = _files_key(files)
    if config.task != "parallel_text":
        key["data_dir"] = os.path.abspath(data_dir)
    return key


def _vocab_hash(vocab: Vocab) -> str:
    """sha256 of the vocabulary's saved files."""
    with tempfile.TemporaryDirectory() as scratch:
        save_vocab(vocab, os.path.join(scratch, "vocab"))
        digest = hashlib.sha256()
        for name in sorted(os.listdir(scratch)):
            digest.update(name.encode() + Path(scratch, name).read_bytes())
    return digest.hexdigest()


def store_key(config: ml_collections.ConfigDict, data_dir: str, src_vocab: Vocab,
              tgt_vocab: Vocab) -> dict:
    """Everything the stored ids depend on, as JSON."""
    return {"format": FORMAT, "source": _source_key(config, data_dir),
            "src_vocab": _vocab_hash(src_vocab), "tgt_vocab": _vocab_hash(tgt_vocab),
            "max_src_len": config.max_src_len, "max_tgt_len": config.max_tgt_len,
            "too_long": config.too_long, "src_eos": bool(config.vocab.src_eos)}


def _store_name(key: dict) -> str:
    return f"{SPLIT}-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


# --- Writing and opening ------------------------------------------------------------------


def _npy_header(shape: tuple[int, int]) -> bytes:
    """A version 1.0 .npy header of an int32 C-order array, padded to HEADER_BYTES."""
    text = f"{{'descr': '<i4', 'fortran_order': False, 'shape': {shape!r}, }}".encode("latin1")
    magic = np.lib.format.magic(1, 0)
    padded = text.ljust(HEADER_BYTES - len(magic) - 2 - 1) + b"\n"
    assert len(padded) == HEADER_BYTES - len(magic) - 2, shape
    return magic + struct.pack("<H", len(padded)) + padded


def _tokenized_chunks(pairs: Iterable[tuple[str, str]], config: ml_collections.ConfigDict,
                      src_vocab: Vocab, tgt_vocab: Vocab) -> Iterator[tuple[int, Examples | None]]:
    """(pairs read, their Examples, or None when the policy dropped all of them), a chunk at
    a time. tokenize's per-chunk count of dropped pairs is not printed: `build` prints the
    total."""
    pairs = iter(pairs)
    for first in itertools.count(1, CHUNK_PAIRS):
        chunk = list(itertools.islice(pairs, CHUNK_PAIRS))
        if not chunk:
            return
        name = f"{SPLIT} pairs {first}-{first + len(chunk) - 1}"
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                examples = pipeline.tokenize(chunk, src_vocab, tgt_vocab, config.max_src_len,
                                             config.max_tgt_len, config.too_long, name,
                                             config.vocab.src_eos)
        except ValueError:
            if config.too_long == "error":
                raise
            examples = None  # under the other policies: no pair of the chunk fits
        yield len(chunk), examples


def _write(directory: str, pairs: Iterable[tuple[str, str]], config: ml_collections.ConfigDict,
           src_vocab: Vocab, tgt_vocab: Vocab) -> tuple[int, int, dict[str, int]]:
    """src.npy and tgt.npy in `directory`, written chunk by chunk; (rows kept, pairs read, how
    many sources and targets were cut)."""
    widths = {"src": config.max_src_len, "tgt": config.max_tgt_len}
    files = {side: open(os.path.join(directory, f"{side}.npy"), "wb") for side in widths}
    rows = read = 0
    cut = {"cut_sources": 0, "cut_targets": 0}
    try:
        for f in files.values():
            f.seek(HEADER_BYTES)
        for count, examples in _tokenized_chunks(pairs, config, src_vocab, tgt_vocab):
            read += count
            if examples is not None:
                files["src"].write(examples.src.astype("<i4", copy=False).tobytes())
                files["tgt"].write(examples.tgt.astype("<i4", copy=False).tobytes())
                rows += len(examples)
                cut["cut_sources"] += examples.cut_sources
                cut["cut_targets"] += examples.cut_targets
        for side, f in files.items():
            f.seek(0)
            f.write(_npy_header((rows, widths[side])))
            f.flush()
            os.fsync(f.fileno())
    finally:
        for f in files.values():
            f.close()
    return rows, read, cut


def _is_ours(directory: Path) -> bool:
    """Whether `directory` holds a manifest this module wrote (whatever its key)."""
    try:
        return json.loads((directory / MANIFEST).read_text())["key"]["format"].startswith(
            "flax_s2s token store")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def open_store(directory: Path, key: dict, src_pad: int, tgt_pad: int) -> Examples | None:
    """The store in `directory` when it exists, holds `key` and its files are whole; else None."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("key") != key:
        return None
    try:
        src = np.load(directory / "src.npy", mmap_mode="r")
        tgt = np.load(directory / "tgt.npy", mmap_mode="r")
    except (OSError, ValueError):  # missing, or shorter than its header says
        return None
    rows = manifest.get("rows")
    if src.shape != (rows, key["max_src_len"]) or tgt.shape != (rows, key["max_tgt_len"]):
        return None
    return Examples(src, tgt, None, src_pad, tgt_pad,
                    cut_sources=manifest.get("cut_sources", 0),
                    cut_targets=manifest.get("cut_targets", 0))


def _remove_leftovers(root: Path, keep: str) -> None:
    """Removes the stores of other keys and the temporary directories of builds that ended
    before renaming theirs, each only where it holds this module's manifest or carries its
    temporary name and its process is gone."""
    for path in root.iterdir():
        if path.name == keep or not path.is_dir():
            continue
        if path.name.startswith(f"{SPLIT}-") and _is_ours(path):
            shutil.rmtree(path)
        elif path.name.startswith(f".{SPLIT}-tmp-"):
            pid = path.name.split("-")[2]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_store(root: Path, key: dict, pairs: Iterable[tuple[str, str]],
                config: ml_collections.ConfigDict, src_vocab: Vocab, tgt_vocab: Vocab) -> Path:
    """Tokenizes `pairs` into a new store under `root` (see the module docstring); its path."""
    final = root / _store_name(key)
    if final.exists():  # a damaged store of this key
        if not _is_ours(final):
            raise FileFormatError(f"{final}: not a token store (no manifest of one); move it "
                                  "away, the train split's tokens are stored there")
        shutil.rmtree(final)
    temporary = Path(tempfile.mkdtemp(prefix=f".{SPLIT}-tmp-{os.getpid()}-", dir=root))
    temporary.chmod(0o755)  # mkdtemp's 0o700, as the workdir's other directories are made
    try:
        rows, read, cut = _write(str(temporary), pairs, config, src_vocab, tgt_vocab)
        if rows == 0:
            raise DataError(pipeline.no_example_fits(SPLIT, config.max_src_len,
                                                     config.max_tgt_len, read))
        manifest = {"key": key, "rows": rows, "pairs": read, "dropped": read - rows, **cut}
        with open(temporary / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.rename(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if read > rows:
        print(f"split {SPLIT!r}: dropped {read - rows} of {read} examples longer than "
              f"max_src_len={config.max_src_len} / max_tgt_len={config.max_tgt_len} (or with an "
              "empty source)")
    if cut["cut_sources"] or cut["cut_targets"]:
        print(f"split {SPLIT!r}: cut {cut['cut_sources']} sources and {cut['cut_targets']} targets "
              f"of {read} examples to max_src_len={config.max_src_len} / "
              f"max_tgt_len={config.max_tgt_len}")
    return final


def train_examples(config: ml_collections.ConfigDict, workdir: str, data_dir: str,
                   src_vocab: Vocab, tgt_vocab: Vocab, pairs: Iterable[tuple[str, str]]) -> Examples:
    """The train split from its store in `workdir`, built first from `pairs` when there is none
    for this config, data and vocabularies."""
    key = store_key(config, data_dir, src_vocab, tgt_vocab)
    root = Path(workdir) / DIRECTORY
    pads = src_vocab.special_tokens.pad, tgt_vocab.special_tokens.pad
    examples = open_store(root / _store_name(key), key, *pads)
    if examples is None:
        root.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(root, keep="")
        path = build_store(root, key, pairs, config, src_vocab, tgt_vocab)
        examples = open_store(path, key, *pads)
        print(f"split {SPLIT!r}: {len(examples)} examples tokenized into {path}")
    else:
        print(f"split {SPLIT!r}: {len(examples)} examples read from {root / _store_name(key)}")
    _remove_leftovers(root, keep=_store_name(key))
    return examples
