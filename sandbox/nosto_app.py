"""The sandbox Nosto server: the GraphQL segment catalogue and the Segment Export download.

Nosto documents the GraphQL endpoint (HTTP Basic, empty user, an API_APPS token as password) but not
how the Segment Export is fetched; the sandbox serves it at ``/v1/segment-export/latest`` behind a
Bearer token, the export's own integration token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from email.utils import formatdate
from typing import Any

from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sandbox import DEFAULT_NOSTO_APPS_TOKEN, DEFAULT_NOSTO_EXPORT_TOKEN
from sandbox.common import RawSendCapture, RequestLog, require_loopback, reset_connection
from sandbox.faults import FaultBook, FaultRuleError

_GZIP_MAGIC = b"\x1f\x8b"
# Whitespace and an optional "query" keyword around exactly the documented selection.
_SEGMENTS_QUERY = re.compile(
    r"^\s*(query\s*(\w+\s*)?)?\{\s*segments\s*\{\s*segments\s*\{\s*id\s+name\s*\}\s*\}\s*\}\s*$"
)


def _graphql_error(message: str, status: int = 200) -> JSONResponse:
    return JSONResponse({"data": None, "errors": [{"message": message}]}, status_code=status)


class NostoSandbox:
    """State and FastAPI app of the sandbox Nosto account.

    :param apps_token: the API_APPS token accepted by the GraphQL endpoint
    :param export_token: the Segment Export's integration token
    """

    def __init__(
        self, apps_token: str = DEFAULT_NOSTO_APPS_TOKEN, export_token: str = DEFAULT_NOSTO_EXPORT_TOKEN
    ) -> None:
        self.apps_token = apps_token
        self.export_token = export_token
        self.faults = FaultBook()
        self.log = RequestLog()
        self.reset()
        self.app = self._build_app()

    def reset(self) -> None:
        self.catalogue: list[dict[str, str]] = []
        self.export: bytes | None = None
        self.export_modified: float | None = None
        self.faults.clear()
        self.log.reset()

    def _basic_password(self, request: Request) -> str | None:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password if sep and user == "" else None

    async def graphql(self, request: Request) -> Response:
        if self._basic_password(request) != self.apps_token:
            return JSONResponse(
                {"errors": [{"message": "Unauthorized"}]},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="Nosto API"'},
            )
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        raw = await request.body()
        if media_type == "application/graphql":
            query = raw.decode("utf-8", errors="replace")
        else:
            # Anything else is read as JSON, so a wrong content type fails the way Nosto's does.
            try:
                document = json.loads(raw)
                query = document["query"]
            except (ValueError, KeyError, TypeError):
                return _graphql_error("Request body must be JSON with a 'query' member.", status=400)
            if not isinstance(query, str):
                return _graphql_error("'query' must be a string.", status=400)
        if not _SEGMENTS_QUERY.match(query):
            return _graphql_error("The sandbox only answers `segments { segments { id name } }`.")
        segments = [{"id": item["id"], "name": item["name"]} for item in self.catalogue]
        return JSONResponse({"data": {"segments": {"segments": segments}}})

    async def segment_export(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.export_token:
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        if self.export is None or self.export_modified is None:
            return JSONResponse({"error": "no export has been produced yet"}, status_code=404)
        gzipped = self.export.startswith(_GZIP_MAGIC)
        headers = {
            "Last-Modified": formatdate(self.export_modified, usegmt=True),
            "Content-Length": str(len(self.export)),
        }
        media_type = "application/gzip" if gzipped else "application/x-ndjson"
        body = b"" if request.method == "HEAD" else self.export
        return Response(body, media_type=media_type, headers=headers)

    async def dispatch(self, request: Request) -> Response:
        started = time.perf_counter()
        rule = self.faults.take_request_fault(request.method, request.url.path)
        fault = rule.kind if rule else None
        response: Response
        if rule is not None and rule.kind == "reset":
            self._record(request, 0, started, fault)
            await reset_connection(request)
            return Response(status_code=500)
        if rule is not None and rule.kind == "delay":
            await asyncio.sleep(rule.seconds)
        if rule is not None and rule.kind == "status":
            headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else None
            content = rule.body if rule.body is not None else {"errors": [{"message": "Injected fault"}]}
            response = JSONResponse(content, status_code=rule.status or 500, headers=headers)
        elif rule is not None and rule.kind == "html":
            page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
            response = Response(page, status_code=rule.status or 502, media_type="text/html")
        elif request.url.path == "/v1/graphql" and request.method == "POST":
            response = await self.graphql(request)
        elif request.url.path == "/v1/segment-export/latest" and request.method in ("GET", "HEAD"):
            response = await self.segment_export(request)
        else:
            response = JSONResponse({"error": "not found"}, status_code=404)
        if rule is not None and rule.kind == "truncated_json":
            body = bytes(response.body)
            response = Response(
                body[: max(1, len(body) // 2)], status_code=rule.status or response.status_code
            )
        self._record(request, response.status_code, started, fault)
        return response

    def _record(self, request: Request, status: int, started: float, fault: str | None) -> None:
        self.log.record(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            template=request.url.path,
            status=status,
            started=started,
            fault=fault,
        )

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Nosto sandbox", docs_url=None, redoc_url=None, openapi_url=None)
        sandbox = self

        @app.post("/__sandbox/reset")
        async def reset(request: Request) -> dict[str, Any]:
            require_loopback(request)
            sandbox.reset()
            return {"ok": True}

        @app.put("/__sandbox/catalogue")
        async def put_catalogue(request: Request, items: list[dict[str, str]] = Body(...)) -> Any:  # noqa: B008
            require_loopback(request)
            if not all(
                isinstance(item.get("id"), str) and isinstance(item.get("name"), str) for item in items
            ):
                return JSONResponse({"error": "each segment needs a string id and name"}, status_code=400)
            sandbox.catalogue = [{"id": item["id"], "name": item["name"]} for item in items]
            return {"segments": len(sandbox.catalogue)}

        @app.get("/__sandbox/catalogue")
        async def get_catalogue(request: Request) -> list[dict[str, str]]:
            require_loopback(request)
            return sandbox.catalogue

        @app.put("/__sandbox/export")
        async def put_export(request: Request) -> dict[str, Any]:
            require_loopback(request)
            sandbox.export = await request.body()
            sandbox.export_modified = time.time()
            return {"bytes": len(sandbox.export), "gzip": sandbox.export.startswith(_GZIP_MAGIC)}

        @app.delete("/__sandbox/export")
        async def delete_export(request: Request) -> dict[str, Any]:
            require_loopback(request)
            sandbox.export = None
            sandbox.export_modified = None
            return {"ok": True}

        @app.get("/__sandbox/requests")
        async def requests_log(request: Request, since: int = 0) -> dict[str, Any]:
            require_loopback(request)
            entries = sandbox.log.since(since)
            return {"requests": entries, "last_seq": entries[-1]["seq"] if entries else since}

        @app.get("/__sandbox/stats")
        async def stats(request: Request) -> dict[str, Any]:
            require_loopback(request)
            return sandbox.log.stats()

        @app.get("/__sandbox/faults")
        async def list_faults(request: Request) -> list[dict[str, Any]]:
            require_loopback(request)
            return sandbox.faults.as_json()

        @app.post("/__sandbox/faults")
        async def add_faults(request: Request, spec: Any = Body(...)) -> Any:  # noqa: B008
            require_loopback(request)
            specs = spec if isinstance(spec, list) else [spec]
            try:
                rules = [sandbox.faults.add(item) for item in specs]
            except (FaultRuleError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return {"rules": [rule.as_json() for rule in rules]}

        @app.delete("/__sandbox/faults")
        async def clear_faults(request: Request) -> dict[str, Any]:
            require_loopback(request)
            sandbox.faults.clear()
            return {"ok": True}

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
        async def everything_else(request: Request, path: str) -> Response:
            return await sandbox.dispatch(request)

        return app

    def asgi(self) -> RawSendCapture:
        return RawSendCapture(self.app)
