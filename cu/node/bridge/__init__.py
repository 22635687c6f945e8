"""Legacynet bridge: compute processes scheduled on a legacy SU (messages from its SU API, process/module data
from an Arweave gateway) exactly as the legacy CU would, and serve their results on the legacy CU routes.

Public API: `BridgeConfig`, `BridgeService` (service.py), `RemoteProcess`/`Progress`/`Entry` (remote.py, the ordered
stream of normalised legacy messages), `SuClient`, `GatewayClient`, checkpoint helpers (checkpoint.py)."""

from cu.node.bridge.errors import AccessDenied, BridgeError, StreamError, UpstreamError
from cu.node.bridge.net import RetryPolicy
from cu.node.bridge.remote import Entry, ProcessInfo, Progress, RemoteProcess
from cu.node.bridge.service import BridgeConfig, BridgeService

__all__ = ["AccessDenied", "BridgeConfig", "BridgeError", "BridgeService", "Entry", "ProcessInfo", "Progress",
           "RemoteProcess", "RetryPolicy", "StreamError", "UpstreamError"]
