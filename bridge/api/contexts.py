"""``GET /contexts/<name>``: the static documents connectors publish (``bridge.plugins``), such
as the NGSI-LD destination's JSON-LD @context, served by the gateway itself.

Public on purpose: a context broker fetches a @context anonymously (it has no API key of this
gateway), and the documents say nothing about the plant (term definitions only). Each answer
carries a strong ETag and a Cache-Control lifetime, so brokers that cache contexts revalidate
with ``If-None-Match`` and get a 304.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path, Response, status

from bridge import plugins

__all__ = ["CONTEXTS_PREFIX", "build_contexts_router"]

CONTEXTS_PREFIX = plugins.DOCUMENTS_PREFIX
# A document changes only with the gateway's version: a day's caching is safe, and the ETag
# makes a revalidation cheap.
_CACHE_CONTROL = "public, max-age=86400"


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    # Weak comparison (RFC 9110 13.1.2): W/"x" matches "x".
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


def build_contexts_router() -> APIRouter:
    router = APIRouter(prefix=CONTEXTS_PREFIX, tags=["contexts"])

    @router.get(
        "/{name}",
        summary="A static document a connector publishes (e.g. a JSON-LD @context); no key",
        description="Served as registered, with an ETag and Cache-Control; `If-None-Match` "
        "with the current ETag answers 304.",
        responses={
            200: {
                "description": "The document",
                "content": {"application/ld+json": {}, "application/json": {}},
            },
            304: {"description": "The cached copy is current"},
            404: {"description": "No document of that name"},
        },
        response_class=Response,
    )
    async def document(
        name: Annotated[str, Path(description="The document's name, e.g. bridge-ngsild.jsonld")],
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        found = plugins.documents().get(name)
        if found is None:
            known = ", ".join(sorted(plugins.documents())) or "none"
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"no document {name!r} (published: {known})"
            )
        etag = _etag(found.body)
        headers = {"ETag": etag, "Cache-Control": _CACHE_CONTROL}
        if _matches(if_none_match, etag):
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
        return Response(content=found.body, media_type=found.media_type, headers=headers)

    return router
