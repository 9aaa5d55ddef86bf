"""The project's error base classes: every error a user can fix by changing a config, a file or a command
derives from `RdpoError`, whose message names the key, file, row or path at fault and what would be
accepted. The command line prints such a message without a traceback and exits non-zero."""
from __future__ import annotations

__all__ = ["ConfigError", "OutputDirError", "RdpoError"]


class RdpoError(Exception):
    """An error whose message says what to change (the CLI prints it and exits with status 1, 2 for configs)."""


class ConfigError(RdpoError, ValueError):
    """A config that cannot run: the message names the file/override, the dotted key and what is accepted."""


class OutputDirError(RdpoError, OSError):
    """``output_dir`` cannot be written (read-only, full, not a directory, in use by another run): the message
    names the path and the cause."""
