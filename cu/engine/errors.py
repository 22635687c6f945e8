"""Exceptions of the engine API."""

from __future__ import annotations


class EngineError(Exception):
    """Base class: the engine itself cannot do what was asked (never raised for a message-level failure)."""


class ModuleError(EngineError):
    """The module cannot be loaded: malformed wasm, unknown format, unknown imports, missing exports."""


class SnapshotError(EngineError):
    """A snapshot is unreadable, from an incompatible version, or belongs to another module."""
