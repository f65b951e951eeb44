"""Errors that the CLI turns into one clear line and exit code 2."""

from __future__ import annotations


class TujieError(Exception):
    """Base class for errors caused by user input (config, data, files), not by a bug."""


class ConfigError(TujieError, ValueError):
    """A run config is malformed: bad YAML, unknown key, wrong type, unknown registry name."""


class DataError(TujieError, ValueError):
    """Input data is missing or malformed; the message names the file, row or field."""


class TrainingError(TujieError, RuntimeError):
    """Training cannot go on (for example the loss became NaN or infinite)."""
