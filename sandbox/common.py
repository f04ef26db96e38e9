"""Pieces both sandbox servers use: the request log, loopback-only admin access, abrupt disconnects."""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException, Request

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_RAW_SEND = "sandbox.raw_send"


class RawSendCapture:
    """Outermost ASGI layer that remembers the server's own ``send`` for the request.

    Starlette wraps ``send`` on its way in; only the server's original one leads back to the socket,
    which the ``reset`` fault needs in order to drop the connection without an HTTP answer.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_RAW_SEND] = send
        await self.app(scope, receive, send)


async def reset_connection(request: Request) -> None:
    """Close the request's TCP connection with a RST, as a crashing proxy would."""
    send = request.scope.get(_RAW_SEND)
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("connection reset needs uvicorn's transport")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 turns the close into a reset instead of an orderly FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let the server notice the loss so it discards whatever response follows.
    await asyncio.sleep(0.01)


def require_loopback(request: Request) -> None:
    """Admin endpoints have no auth, so they answer only to the local machine."""
    host = request.client.host if request.client else None
    if host not in LOOPBACK_HOSTS:
        raise HTTPException(status_code=403, detail="the sandbox admin API answers to loopback only")


class RequestLog:
    """Recent requests with their outcome; never holds headers, so no credential is ever kept.

    :param limit: how many entries to keep; older ones are dropped first
    """

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self.reset()

    def reset(self) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=self.limit)
        self._seq = itertools.count(1)
        self.calls: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.throttled = 0
        self.violations = 0
        self.response_violations = 0
        self.faults_fired = 0

    def record(
        self,
        *,
        method: str,
        path: str,
        query: str,
        template: str | None,
        status: int,
        started: float,
        violation: str | None = None,
        error: str | None = None,
        fault: str | None = None,
        response_violation: str | None = None,
    ) -> dict[str, Any]:
        entry = {
            "seq": next(self._seq),
            "time": time.time(),
            "method": method,
            "path": path,
            "query": query,
            "template": template,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "violation": violation,
            "error": error,
            "fault": fault,
            "response_violation": response_violation,
        }
        self.entries.append(entry)
        self.calls[f"{method} {template or path}"] += 1
        self.statuses[str(status)] += 1
        if status == 429:
            self.throttled += 1
        if violation is not None:
            self.violations += 1
        if response_violation is not None:
            self.response_violations += 1
        if fault is not None:
            self.faults_fired += 1
        return entry

    def since(self, seq: int) -> list[dict[str, Any]]:
        return [entry for entry in self.entries if entry["seq"] > seq]

    def stats(self) -> dict[str, Any]:
        return {
            "calls": dict(sorted(self.calls.items())),
            "statuses": dict(sorted(self.statuses.items())),
            "total": sum(self.calls.values()),
            "throttled": self.throttled,
            "violations": self.violations,
            "response_violations": self.response_violations,
            "faults_fired": self.faults_fired,
        }
