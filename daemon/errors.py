"""Errors of the daemon package.

DropsyncError                 base; the CLI maps it to exit code 1
├── ConfigError               bad or unreadable config: names the file and key (exit 2)
├── UsageError                wrong use of the command line (exit 2)
├── SecretError               a provider secret cannot be read (names the source only)
├── StoreMissing              a command other than ``run`` found no store (names the path
│                             and where it came from); only ``run`` creates one
├── AlreadyRunning            another ``dropsync run`` holds the store (names its pid)
├── DocumentError             one document of a drop file or inbox row is unusable; the
│                             reason is written to the quarantine receipt or inbox row
├── FileTaken                 ``dropsync ingest``: another ingest of the file is under way
└── ParserProcessError        the parser process ended without finishing its file (the
                              daemon parses the rest itself)

This is the errors module of the whole daemon package, its flow packages (``ingest``,
``delivery``, ``inbound``, ``process``) and the CLI included: one tree, which the CLI maps
to exit codes. An exception that is a signal inside one flow, raised and caught there and
never an error of a command, stays beside its code: ``sending.Paused`` (a provider's
pause ends a delivery pass), ``dropfiles.Unreadable`` (an entry that is not a regular
file), ``early_signals.StopBeforeStart`` and ``health_check.Unknown`` (a check that
cannot run).
"""

from __future__ import annotations


class DropsyncError(Exception):
    """Base class of the daemon's own errors."""


class ConfigError(DropsyncError):
    """The configuration is invalid; the message names the file, the key and what is expected."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


class SecretError(DropsyncError):
    """A secret could not be loaded from its configured source."""


class StoreMissing(DropsyncError):
    """The store does not exist; the message names the path and where that path came from."""


class AlreadyRunning(DropsyncError):
    """Another daemon holds the store's instance lock; the message names its pid."""


class DocumentError(DropsyncError):
    """A document cannot be turned into a change; ``str(error)`` is the actionable reason."""


class UsageError(DropsyncError):
    """The command line was used wrongly; the message says how to use it."""


class FileTaken(DropsyncError):
    """Another ingest owns the file (``dropsync ingest`` beside the daemon)."""


class ParserProcessError(DropsyncError):
    """The parser process ended without finishing its file."""
