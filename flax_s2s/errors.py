"""Errors shared by modules that do not import each other."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""
