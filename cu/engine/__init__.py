"""cu.engine: AO process modules (all 7 Module-Formats) on wasmtime through the native core.

See docs/INTERNAL-API.md for the contract and cu/engine/README.md for behaviour choices (environment,
/dev/urandom, time, WeaveDrive, rollback).
"""

from cu.engine.errors import EngineError, ModuleError, SnapshotError
from cu.engine.formats import FORMATS
from cu.engine.instance import Instance
from cu.engine.module import Module
from cu.engine.snapshot import Snapshot

__all__ = ["FORMATS", "EngineError", "Instance", "Module", "ModuleError", "Snapshot", "SnapshotError"]
