"""What a workdir was made from, `WORKDIR/made_from.json`: the sha256 of its vocabulary files and,
for a run fine-tuned from `config.pretrained`, of that directory's config.json and tokenizer
files. Written with the vocabularies; every later run of the workdir checks it before it
writes anything, so that a rerun never mixes one checkpoint's tokenizer with another's weights
or trains over vocabulary files that were replaced.

```
{"vocabularies": {"src_vocab.model": "9f2c...", "tgt_vocab.model": "9f2c..."},
 "pretrained": {"directory": "/models/t5-small", "files": {"config.json": "41d0...", ...}}}
```
"pretrained" is null for vocabularies built from the run's own data.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

from flax_s2s.data.pretrained_tokenizer import tokenizer_vocab
from flax_s2s.data.vocab import VOCAB_SUFFIXES, save_vocab
from flax_s2s.errors import ConfigError, FileFormatError, read_json_object
from flax_s2s.hf_files import CONFIG_FILE, TOKENIZER_FILES

MADE_FROM = "made_from.json"
VOCAB_STEMS = ("src_vocab", "tgt_vocab")  # task_data.SRC_VOCAB, TGT_VOCAB


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def vocabulary_hashes(workdir: str) -> dict[str, str]:
    """{file name: sha256} of the vocabulary files in `workdir`."""
    names = sorted({stem + suffix for stem in VOCAB_STEMS for suffix, _ in VOCAB_SUFFIXES.values()})
    return {name: _sha256(os.path.join(workdir, name)) for name in names
            if os.path.isfile(os.path.join(workdir, name))}


def pretrained_hashes(directory: str) -> dict[str, str]:
    """{file name: sha256} of a save_pretrained directory's config.json and tokenizer files."""
    return {name: _sha256(os.path.join(directory, name)) for name in (CONFIG_FILE, *TOKENIZER_FILES)
            if os.path.isfile(os.path.join(directory, name))}


def record(workdir: str, pretrained: str) -> None:
    """Writes `made_from.json` for the vocabularies now in `workdir`, made from the tokenizer of
    the directory `pretrained` ("" when built from the run's data); beside itself, then renamed."""
    made = {"vocabularies": vocabulary_hashes(workdir),
            "pretrained": {"directory": os.path.abspath(pretrained),
                           "files": pretrained_hashes(pretrained)} if pretrained else None}
    fd, partial = tempfile.mkstemp(prefix=f".{MADE_FROM}.", suffix=".partial", dir=workdir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(made, f, indent=1, sort_keys=True)
        os.replace(partial, os.path.join(workdir, MADE_FROM))
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


def read(workdir: str) -> dict | None:
    """The record of `workdir`, or None where it has none (made before records were kept)."""
    path = os.path.join(workdir, MADE_FROM)
    if not os.path.exists(path):
        return None
    made = read_json_object(path, 'what the workdir was made from, {"vocabularies": ..., '
                                  '"pretrained": ...}')
    if not isinstance(made.get("vocabularies"), dict) or "pretrained" not in made:
        raise FileFormatError(f"{path}: expected the keys 'vocabularies' and 'pretrained'")
    return made


def check(workdir: str, pretrained: str) -> None:
    """Refuses a training run of `workdir` with config.pretrained `pretrained` ("" for none, or
    for vocabularies built from the data) when they do not come from the same place: a
    vocabulary file changed since it was recorded (FileFormatError), or a pretrained directory
    other than the one the workdir was made from, or none where it was made from one
    (ConfigError, naming both). Without a record, a pretrained run compares the saved files with
    its tokenizer's; a workdir without vocabularies passes."""
    made = read(workdir)
    if made is None:
        if pretrained and vocabulary_hashes(workdir):
            _check_unrecorded(workdir, pretrained)
        return
    path = os.path.join(workdir, MADE_FROM)
    for name, recorded in sorted(made["vocabularies"].items()):
        now = vocabulary_hashes(workdir).get(name)
        if now != recorded:
            raise FileFormatError(
                f"{os.path.join(workdir, name)}: not the vocabulary this workdir was made with "
                f"({path} records sha256 {recorded[:12]}, the file "
                f"{'has ' + now[:12] if now else 'is gone'}): restore that file, or train in a "
                "new workdir")
    _check_pretrained(workdir, pretrained, made["pretrained"])


def _check_pretrained(workdir: str, pretrained: str, made: dict | None) -> None:
    """The pretrained directory of this run against the one `workdir` was made from."""
    if made is None and pretrained:
        raise ConfigError(
            f"config.pretrained={pretrained!r}: {workdir} holds vocabularies built from its own "
            "data, not that checkpoint's tokenizer: fine-tune in a new workdir")
    if made is None:
        return
    source = made.get("directory", "?")
    if not pretrained:
        raise ConfigError(
            f"config.pretrained is empty, but {workdir} was made from the pretrained directory "
            f"{source!r} (its tokenizer): rerun with --config.pretrained={source}, or train in a "
            "new workdir")
    now = pretrained_hashes(pretrained)
    changed = sorted(name for name in set(now) | set(made.get("files", {}))
                     if now.get(name) != made["files"].get(name))
    if changed:
        raise ConfigError(
            f"config.pretrained={pretrained!r}: {workdir} was made from the pretrained directory "
            f"{source!r}, and their {', '.join(changed)} differ ({MADE_FROM} records the sha256 of "
            f"{source!r}'s): its vocabularies are that tokenizer's, and these weights would be "
            f"trained on its ids. Rerun with --config.pretrained={source}, or fine-tune in a new "
            "workdir")


def _check_unrecorded(workdir: str, pretrained: str) -> None:
    """A workdir without a record: its vocabulary files must be those this run's tokenizer
    saves (`tokenizer_vocab` of `pretrained`), byte for byte."""
    fresh = tokenizer_vocab(pretrained)
    with tempfile.TemporaryDirectory() as scratch:
        for stem in VOCAB_STEMS:
            save_vocab(fresh, os.path.join(scratch, stem))
        expected = vocabulary_hashes(scratch)
    if vocabulary_hashes(workdir) != expected:
        raise ConfigError(
            f"config.pretrained={pretrained!r}: the vocabularies in {workdir} are not that "
            "checkpoint's tokenizer (written by a run from another pretrained directory?): "
            "fine-tune in a new workdir")
