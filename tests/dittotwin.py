"""A Ditto twin store for tests, and a real HTTP server with the few Ditto endpoints over it.

``TwinStore.apply`` takes a Ditto Protocol message, checks it against the JSON Schemas in
tests/ditto/ (re-expressed from Ditto's protocol specification, cited there) and applies it as
Ditto's things service does: ``modify`` replaces the value at the JSON pointer ``path`` (the
parent must exist: a feature's properties need the feature), ``merge`` applies the value as an
RFC 7396 merge patch there (intermediate objects made). Every thing it holds is checked against
the thing schema after each change.

``DittoHttpServer`` is uvicorn on 127.0.0.1 (a fixed port, so a test can stop and start it
again): ``PUT /api/2/things/{id}``, ``PUT`` and ``PATCH`` of any path below, ``GET`` of a thing;
basic authentication when given; answers and errors as Ditto's HTTP API gives them (201
created, 204 modified, error JSON ``status``/``error``/``message``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jsonschema_rs
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from support import LOOPBACK

__all__ = [
    "DittoError",
    "DittoHttpServer",
    "TwinStore",
    "basic",
    "envelope_errors",
    "merge_patch",
    "schema_errors",
]

SCHEMAS = Path(__file__).resolve().parent / "ditto"
_VALIDATORS = {
    name: jsonschema_rs.validator_for(json.loads((SCHEMAS / f"{name}.json").read_text()))
    for name in ("protocol-envelope", "thing", "error")
}


def schema_errors(schema: str, instance: Any) -> list[str]:
    """What is wrong with ``instance`` by the schema tests/ditto/<schema>.json ([] if valid)."""
    return [
        f"{'/'.join(str(p) for p in e.instance_path)}: {e.message}"
        for e in _VALIDATORS[schema].iter_errors(instance)
    ]


def envelope_errors(message: Any) -> list[str]:
    return schema_errors("protocol-envelope", message)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396, section 2 (MergePatch), on copies."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def basic(username: str, password: str) -> str:
    """The Authorization header of HTTP basic authentication."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class DittoError(Exception):
    """A command Ditto refuses: ``status`` and its error JSON."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"{status} {error}: {message}")
        self.body = {"status": status, "error": error, "message": message}
        assert not schema_errors("error", self.body), schema_errors("error", self.body)


def _pointer(path: str) -> list[str]:
    # RFC 6901 unescaping: ~1 is /, ~0 is ~.
    return [s.replace("~1", "/").replace("~0", "~") for s in path.split("/")[1:] if s != ""]


@dataclass
class Applied:
    correlation_id: str
    action: str
    thing_id: str
    path: str


@dataclass
class TwinStore:
    things: dict[str, dict[str, Any]] = field(default_factory=dict)
    applied: list[Applied] = field(default_factory=list)
    # Policies that exist; None: any policy id is accepted.
    policies: set[str] | None = None

    def apply(self, message: dict[str, Any]) -> int:
        """Apply one Ditto Protocol twin command; the HTTP status Ditto answers (201 created,
        204 changed). Raises ``DittoError`` for a command Ditto refuses, AssertionError for a
        message that is not a valid envelope."""
        problems = envelope_errors(message)
        assert not problems, f"not a valid Ditto Protocol envelope: {problems}\n{message}"
        namespace, name, _, _, _, action = message["topic"].split("/")
        thing_id = f"{namespace}:{name}"
        segments = _pointer(message["path"])
        status = self._apply(thing_id, action, segments, message.get("value"))
        thing = self.things.get(thing_id)
        if thing is not None:
            problems = schema_errors("thing", thing)
            assert not problems, f"the thing became invalid: {problems}\n{thing}"
        self.applied.append(
            Applied(message["headers"]["correlation-id"], action, thing_id, message["path"])
        )
        return status

    def _apply(self, thing_id: str, action: str, segments: list[str], value: Any) -> int:
        if action not in ("modify", "merge"):
            raise DittoError(400, "things:command.unsupported", f"{action} is not applied here")
        thing = self.things.get(thing_id)
        if not segments:
            if action == "modify":
                return self._put_thing(thing_id, value, created=thing is None)
            merged = merge_patch(thing or {}, value)
            return self._put_thing(thing_id, merged, created=thing is None)
        if thing is None:
            raise DittoError(
                404, "things:thing.notfound", f"The Thing with ID '{thing_id}' could not be found"
            )
        parent: Any = thing
        for depth, segment in enumerate(segments[:-1]):
            if not isinstance(parent, dict) or segment not in parent:
                if action == "merge" or (depth == 0 and segment == "features"):
                    # A merge makes what is missing; so does PUT of a feature (its container).
                    parent.setdefault(segment, {})
                else:
                    missing = "/".join(segments[: depth + 1])
                    error = "things:feature.notfound" if "features" in segments[:1] else ""
                    raise DittoError(
                        404,
                        error or "things:attribute.notfound",
                        f"'{missing}' of the Thing with ID '{thing_id}' does not exist",
                    )
            parent = parent[segment]
        last = segments[-1]
        existed = last in parent
        if action == "modify":
            parent[last] = copy.deepcopy(value)
        elif value is None:
            parent.pop(last, None)
        else:
            parent[last] = merge_patch(parent.get(last), value)
        return 204 if existed or action == "merge" else 201

    def _put_thing(self, thing_id: str, value: Any, *, created: bool) -> int:
        if not isinstance(value, dict):
            raise DittoError(400, "things:thing.invalid", "a Thing is a JSON object")
        if value.get("thingId", thing_id) != thing_id:
            raise DittoError(400, "things:id.notsettable", "the thingId differs from the topic's")
        policy = value.get("policyId", thing_id)  # none given: Ditto makes the thing's own
        if self.policies is not None and policy not in self.policies and policy != thing_id:
            raise DittoError(
                400,
                "things:policy.notallowed",
                f"The Thing with ID '{thing_id}' could not be created with the Policy with ID "
                f"'{policy}': it does not exist or the requester may not use it",
            )
        self.things[thing_id] = {**copy.deepcopy(value), "thingId": thing_id, "policyId": policy}
        return 201 if created else 204

    def thing(self, thing_id: str) -> dict[str, Any]:
        return self.things[thing_id]

    def correlation_ids(self) -> list[str]:
        return [a.correlation_id for a in self.applied]


class _Embedded(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner owns the signals


@dataclass
class Served:
    method: str
    path: str
    content_type: str
    correlation_id: str | None
    status: int


class DittoHttpServer:
    """The things endpoints of Ditto's HTTP API over a ``TwinStore`` (see module doc)."""

    def __init__(
        self,
        store: TwinStore,
        port: int,
        *,
        authorization: str | None = None,
    ) -> None:
        """``authorization``: the Authorization header every request must carry (``basic``
        makes one), else 401 as Ditto answers; None: no authentication."""
        self.store = store
        self.port = port
        self.requests: list[Served] = []
        self._auth = authorization
        self._server: _Embedded | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def _handle(self, request: Request) -> Response:
        method = request.method
        thing_id = unquote(request.path_params["thing_id"])
        rest = request.path_params.get("rest", "")
        path = "/" + "/".join(unquote(s) for s in rest.split("/") if s)
        content_type = request.headers.get("content-type", "")
        correlation = request.headers.get("correlation-id")
        status, body = await self._answer(request, method, thing_id, path, content_type)
        if status >= 400:  # the in-test Ditto answers errors as Ditto's error schema says
            assert not schema_errors("error", body), (body, schema_errors("error", body))
        self.requests.append(Served(method, path, content_type, correlation, status))
        if body is None:
            return Response(status_code=status)
        return JSONResponse(body, status_code=status)

    async def _answer(
        self, request: Request, method: str, thing_id: str, path: str, content_type: str
    ) -> tuple[int, Any]:
        if self._auth is not None and request.headers.get("authorization") != self._auth:
            return 401, {
                "status": 401,
                "error": "gateway:authentication.failed",
                "message": "Multiple authentication mechanisms were applicable but none succeeded",
            }
        if method == "GET":
            thing = self.store.things.get(thing_id)
            if thing is None:
                return 404, {
                    "status": 404,
                    "error": "things:thing.notfound",
                    "message": f"The Thing with ID '{thing_id}' could not be found",
                }
            return 200, thing
        expected = "application/merge-patch+json" if method == "PATCH" else "application/json"
        if content_type.split(";")[0].strip() != expected:
            return 415, {
                "status": 415,
                "error": "things:mediatype.unsupported",
                "message": f"The Media-Type <{content_type}> is not supported for {method}",
            }
        try:
            value = json.loads(await request.body())
        except ValueError:
            return 400, {"status": 400, "error": "json:format.invalid", "message": "not JSON"}
        namespace, _, name = thing_id.partition(":")
        message = {
            "topic": f"{namespace}/{name}/things/twin/commands/"
            + ("merge" if method == "PATCH" else "modify"),
            "headers": {
                "correlation-id": request.headers.get("correlation-id", "none"),
                "content-type": expected,
            },
            "path": path,
            "value": value,
        }
        try:
            status = self.store.apply(message)
        except DittoError as exc:
            return int(exc.body["status"]), exc.body
        return status, (self.store.things[thing_id] if status == 201 and path == "/" else None)

    async def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/api/2/things/{thing_id}", self._handle, methods=["GET", "PUT", "PATCH"]),
                Route(
                    "/api/2/things/{thing_id}/{rest:path}",
                    self._handle,
                    methods=["GET", "PUT", "PATCH"],
                ),
            ]
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, self.port))
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = _Embedded(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._task.done():
                    await self._task
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            async with asyncio.timeout(5):
                await task
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> DittoHttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
