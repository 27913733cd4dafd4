"""Error types mapped to exit codes by the CLI: 2 for bad input or config, 1 for runtime failures."""

from __future__ import annotations


class AshError(Exception):
    """A runtime failure with a message fit for one line (exit 1)."""

    exit_code = 1


class UsageError(AshError):
    """Bad input from the user: one line naming what is wrong and where (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file or value is wrong; the message names the file and the key."""


class StoreError(AshError):
    """The database cannot be used (newer schema, locked, corrupt)."""


class UnknownTask(UsageError):
    pass


class NotFound(AshError):
    pass


class IllegalTransition(AshError):
    pass
