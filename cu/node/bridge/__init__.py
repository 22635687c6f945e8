"""Legacynet bridge: compute processes scheduled on a legacy SU (messages from its SU API, process/module data
from an Arweave gateway) exactly as the legacy CU would, and serve their results on the legacy CU routes.

Public API: `BridgeConfig` (config.py), `BridgeService` (service.py), `RemoteProcess`/`Progress`/`Entry`
(remote.py, the ordered stream of normalised legacy messages), `SuClient`, `GatewayClient`, checkpoint helpers
(checkpoint.py). Names are resolved lazily, so `cu.node.config` can import `bridge.config` without the service."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AccessDenied": "errors", "BridgeError": "errors", "StreamError": "errors", "UpstreamError": "errors",
    "RetryPolicy": "net", "Entry": "remote", "ProcessInfo": "remote", "Progress": "remote",
    "RemoteProcess": "remote", "BridgeConfig": "config", "BridgeService": "service",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
