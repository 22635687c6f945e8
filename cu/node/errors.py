"""Errors carrying the HTTP status the legacy units answer with."""

from __future__ import annotations


class NodeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> NodeError:
    return NodeError(400, message)


def not_found(message: str) -> NodeError:
    return NodeError(404, message)
