"""Errors shared by modules that do not import each other, and a reader of JSON files that raises
them."""

from __future__ import annotations

import errno
import json
from typing import Any


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


class FileFormatError(ValueError):
    """A file a run reads is not what it should hold; the message names the file (and the line,
    where there is one) and what was expected."""


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
