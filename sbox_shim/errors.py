"""Errors a user can act on: what happened, where, and what to do."""
from __future__ import annotations

EXIT_USAGE = 2
EXIT_SANDBOX = 125


class SboxError(Exception):
    """An expected failure: printed as one line, never as a traceback."""

    exit_code = 1

    def __str__(self) -> str:
        return f"sbox: {self.args[0]}"


class UsageError(SboxError):
    exit_code = EXIT_USAGE


class ConfigError(SboxError):
    """A problem in a config file, located by file, line and key."""

    exit_code = EXIT_USAGE

    def __init__(self, path: str, line: int | None, key: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.key = key
        self.message = message

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        key = f" {self.key}:" if self.key else ""
        return f"sbox: {where}:{key} {self.message}"


class SandboxError(SboxError):
    """The sandbox could not be created; nothing ran."""

    exit_code = EXIT_SANDBOX


class CommandNotFound(SboxError):
    """The command does not exist: 127, as a shell says."""

    exit_code = 127


def reported(exc: BaseException) -> int:
    """Print an expected failure as sbox's one line and give its exit code: an SboxError, or an
    OSError of a file that changed under sbox while it checked it (a sandbox racing it?)."""
    import sys

    if isinstance(exc, SboxError):
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    where = f"{getattr(exc, 'filename', None)}: " if getattr(exc, "filename", None) else ""
    print(f"sbox: {where}{getattr(exc, 'strerror', None) or exc} (did it change while sbox checked it?); "
          "nothing more ran", file=sys.stderr)
    return EXIT_SANDBOX
