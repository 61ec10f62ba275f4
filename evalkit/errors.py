"""The errors evalkit knows how to explain: each message says what went wrong and how to fix it.

A leaf module (it imports nothing from evalkit), so every layer can raise these without an import cycle.
The command line catches `EvalkitError` and prints its message as one line, never a traceback.
"""

from __future__ import annotations


class EvalkitError(Exception):
    """Base of every error whose message is written for the user."""


class TaskError(EvalkitError, ValueError):
    """A task cannot be built or its data cannot be read."""


class BackendError(EvalkitError, RuntimeError):
    """A backend cannot serve a request (a missing checkpoint, an option it does not take, a server it cannot reach)."""


class RunStoreError(EvalkitError, RuntimeError):
    """A run folder cannot be created, read or resumed."""


class ChatFormatError(BackendError):
    """A conversation that a model's chat format cannot express (a system prompt it refuses or would drop)."""
