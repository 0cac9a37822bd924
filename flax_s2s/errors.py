"""Errors shared by modules that do not import each other, and a reader of JSON files that raises
them."""

from __future__ import annotations

import errno
import json
import os
from typing import Any


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


class FileFormatError(ValueError):
    """A file a run reads is not what it should hold; the message names the file (and the line,
    where there is one) and what was expected."""


class PathError(ValueError):
    """A directory a run must write (the workdir, the data directory) cannot be one: it is a file,
    lies under a file, or cannot be written; the message names the path and the way out."""


class DataError(ValueError):
    """The data cannot train under the config (a pair over the lengths under too_long="error", a
    split where no pair fits); the message names the file and line, or the split, and the keys
    that decide."""


class DiskFullError(RuntimeError):
    """The disk filled (ENOSPC) while a run wrote to it; the message names what was being written
    and the newest checkpoint that was saved whole."""


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` (or one it was raised from) is ENOSPC: an OSError with that errno, or the
    error text of a library that reports it in words (tensorstore, under orbax: a ValueError
    "RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']")."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def check_writable_dir(path: str, what: str, read_only_ok: bool = False) -> None:
    """PathError naming `what` (a flag or config key) unless `path` is a directory this process
    can write, or can be made one: it must not be a file nor lie under one, and its nearest
    existing ancestor must be writable (`read_only_ok`: an existing directory need not be)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise PathError(f"{what} {path!r} is a file, not a directory; give a directory there")
    if read_only_ok and os.path.isdir(path):
        return
    existing = path
    while not os.path.exists(existing):
        parent = os.path.dirname(os.path.abspath(existing))
        if parent == os.path.abspath(existing):
            break
        existing = parent
    if not os.path.isdir(existing):
        raise PathError(f"{what} {path!r} lies under the file {existing!r}, which cannot hold a "
                        "directory; give a path under a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PathError(f"{what} {path!r} cannot be written ({existing!r}: permission denied); "
                        "give a directory you can write")


def read_json_object(path: str, expected: str) -> dict[str, Any]:
    """The JSON object in the file `path`; anything else raises FileFormatError naming the file,
    the line and column where the JSON breaks, and what was `expected` ("the config saved with
    the checkpoint, a JSON object")."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except json.JSONDecodeError as error:
        raise FileFormatError(f"{path}:{error.lineno}: not valid JSON at column {error.colno} "
                              f"({error.msg}); expected {expected}") from None
    except UnicodeDecodeError as error:
        raise FileFormatError(f"{path}: not UTF-8 text (byte {error.start}); expected "
                              f"{expected}") from None
    if not isinstance(value, dict):
        raise FileFormatError(f"{path}: a JSON {type(value).__name__}; expected {expected}")
    return value
