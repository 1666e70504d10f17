"""A small NGSI-LD context broker on 127.0.0.1 for the NGSI-LD destination's tests and bench.

Real HTTP (uvicorn + Starlette on a port of its own), real state: entities per tenant, and
``POST /ngsi-ld/v1/entityOperations/upsert`` with ``options=update`` semantics (ETSI GS CIM 009
clause 5.6.8): an entity that does not exist is created; one that does gets each attribute of
the request replaced whole (sub-attributes included), its other attributes kept. Answers 201
(the ids created), 204 (all updated) or 207 (a BatchOperationResult) like a broker does.
``POST /ngsi-ld/v1/temporal/entities/{id}/attrs`` (Add Attributes to Temporal Evolution of an
Entity) appends attribute instances to the entity's history (``history``): 204, or 404
ResourceNotFound for an entity it does not hold.

Tests steer it: ``refuse`` makes the broker answer an entity with an error (a ProblemDetails,
so the 207 path), ``fail_with`` answers whole requests with a status, ``stop``/``start`` take
the port away and give it back (connection refused in between), ``temporal_fail_with``
answers the temporal API alone with a status. Every request is recorded (headers, raw body,
parsed body, and duplicate JSON keys if any).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["TEMPORAL", "UPSERT", "BrokerRequest", "NgsiLdBroker"]

UPSERT = "/ngsi-ld/v1/entityOperations/upsert"
TEMPORAL = "/ngsi-ld/v1/temporal/entities/{entity_id}/attrs"
_ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class BrokerRequest:
    path: str
    query: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    duplicate_keys: tuple[str, ...]


class _Embedded(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner owns the signals


def _parse(raw: bytes) -> tuple[Any, list[str]]:
    """The JSON body, and every key an object of it repeats (a broker would keep one)."""
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        return seen

    return json.loads(raw, object_pairs_hook=pairs), duplicates


@dataclass
class NgsiLdBroker:
    port: int = 0
    # tenant ("" the default) -> entity id -> entity (without @context)
    entities: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    requests: list[BrokerRequest] = field(default_factory=list)
    # tenant -> entity id -> attribute -> instances added through the temporal API, in order
    history: dict[str, dict[str, dict[str, list[Any]]]] = field(default_factory=dict)
    # entity id -> (status, NGSI-LD error type, detail) answered for that entity in a 207
    refuse: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    # statuses answered to the next whole requests, one each, in order
    fail_with: list[int] = field(default_factory=list)
    retry_after: str | None = None
    # statuses answered to the next temporal API requests, one each, in order
    temporal_fail_with: list[int] = field(default_factory=list)
    _server: _Embedded | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tenant(self, name: str | None = None) -> dict[str, dict[str, Any]]:
        return self.entities.setdefault(name or "", {})

    async def _record(self, request: Request) -> Any:
        raw = await request.body()
        try:
            body, duplicates = _parse(raw)
        except ValueError:
            body, duplicates = None, []
        self.requests.append(
            BrokerRequest(
                request.url.path,
                request.url.query,
                {k.lower(): v for k, v in request.headers.items()},
                raw,
                body,
                tuple(duplicates),
            )
        )
        return body

    async def _temporal(self, request: Request) -> Response:
        body = await self._record(request)
        if self.temporal_fail_with:
            status = self.temporal_fail_with.pop(0)
            kind = "InternalError" if status >= 500 else "BadRequestData"
            return _problem(status, kind, "told to fail")
        if request.headers.get("content-type", "").split(";")[0] != "application/ld+json":
            return _problem(415, "InvalidRequest", "expected application/ld+json")
        if not isinstance(body, dict) or "@context" not in body:
            return _problem(400, "BadRequestData", "the body must be an object with @context")
        tenant = request.headers.get("ngsild-tenant") or ""
        entity_id = request.path_params["entity_id"]  # percent-decoded by the router
        if entity_id not in self.tenant(tenant):
            return _problem(404, "ResourceNotFound", f"{entity_id}: no such entity")
        attrs = self.history.setdefault(tenant, {}).setdefault(entity_id, {})
        for name, instances in body.items():
            if name == "@context":
                continue
            if not isinstance(instances, list):
                return _problem(400, "BadRequestData", f"{name}: not an array of instances")
            attrs.setdefault(name, []).extend(instances)
        return Response(status_code=204)

    async def _upsert(self, request: Request) -> Response:
        body = await self._record(request)
        if self.fail_with:
            status = self.fail_with.pop(0)
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return _problem(
                status,
                "InternalError" if status >= 500 else "BadRequestData",
                "told to fail",
                headers,
            )
        if request.query_params.get("options") != "update":
            return _problem(400, "InvalidRequest", "this broker implements options=update only")
        if request.headers.get("content-type", "").split(";")[0] != "application/ld+json":
            return _problem(415, "InvalidRequest", "expected application/ld+json")
        if not isinstance(body, list) or not body:
            return _problem(400, "InvalidRequest", "the body must be a non-empty JSON array")
        store = self.tenant(request.headers.get("ngsild-tenant"))
        success: list[str] = []
        created: list[str] = []
        errors: list[dict[str, Any]] = []
        for entity in body:
            entity_id = entity.get("id") if isinstance(entity, dict) else None
            if not isinstance(entity_id, str) or "type" not in entity:
                return _problem(400, "BadRequestData", "an entity without id or type")
            if "@context" not in entity:
                return _problem(400, "BadRequestData", f"{entity_id}: no @context")
            refused = self.refuse.get(entity_id)
            if refused is not None:
                status, kind, detail = refused
                problem = {
                    "type": _ERRORS + kind,
                    "title": kind,
                    "status": status,
                    "detail": detail,
                }
                errors.append({"entityId": entity_id, "error": problem})
                continue
            attributes = {k: v for k, v in entity.items() if k != "@context"}
            existing = store.get(entity_id)
            if existing is None:
                store[entity_id] = attributes
                created.append(entity_id)
            else:
                existing.update(attributes)  # each attribute replaced whole (options=update)
            success.append(entity_id)
        if errors:
            return JSONResponse({"success": success, "errors": errors}, status_code=207)
        if created:
            return JSONResponse(created, status_code=201)
        return Response(status_code=204)

    async def start(self) -> None:
        app = Starlette(
            routes=[
                Route(UPSERT, self._upsert, methods=["POST"]),
                Route(TEMPORAL, self._temporal, methods=["POST"]),
            ]
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = int(sock.getsockname()[1])
        self._server = _Embedded(uvicorn.Config(app, log_level="warning", access_log=False))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        async with asyncio.timeout(_START_TIMEOUT_S):
            while not self._server.started:
                if self._task.done():
                    await self._task  # raises what went wrong
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Close the port (the state is kept: ``start`` serves it again on the same port)."""
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), _STOP_TIMEOUT_S)
        except TimeoutError:
            server.force_exit = True
            await asyncio.wait_for(task, _STOP_TIMEOUT_S)

    async def __aenter__(self) -> NgsiLdBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _problem(
    status: int, kind: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"type": _ERRORS + kind, "title": kind, "status": status, "detail": detail}
    return JSONResponse(
        body, status_code=status, headers=headers, media_type="application/problem+json"
    )
