"""Errors shared by modules that do not import each other."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


class FileFormatError(ValueError):
    """A file a run reads is not what it should hold; the message names the file (and the line,
    where there is one) and what was expected."""
