"""What an export knows beside the store: the gateway, where each tag is read from, and the
outputs of one mapping revision.

The store keeps a prediction's mapping revision (the sha256 of the mapping file), not the
mapping: which sources and outputs a revision had is known only from the mapping file itself
(``from_mapping``, the CLI's ``--mapping``), and then only for predictions made under that very
revision. A running gateway's API knows its tags' source names (``from_tag_sources``), not its
mapping. Whatever is not known is said so in the export, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from bridge.config.resolved import Mapping

__all__ = ["CHANNELS", "LineageContext", "OutputRef", "SourceRef", "endpoint_origin"]

# The channel each output kind delivers through, as the export names it.
CHANNELS = {
    "opcua-server": "opcua",
    "mes-rest": "mes",
    "uns": "mqtt",
    "sparkplug": "mqtt",
    "webhook": "webhook",
}
# URI schemes of kinds whose settings give a host and a port rather than a URL.
_SCHEMES = {"uns": "mqtt", "sparkplug": "mqtt"}


@dataclass(frozen=True, slots=True)
class SourceRef:
    """A source as a dataset namespace: its address (``opc.tcp://plc:4840``) when known,
    else ``bridge://<gateway>/sources/<name>``."""

    name: str
    kind: str | None
    namespace: str


@dataclass(frozen=True, slots=True)
class OutputRef:
    """An output of a mapping revision. ``durable``: fed through the outbox (its deliveries
    are rows until accepted); otherwise written live, with no record per prediction."""

    name: str
    kind: str
    durable: bool
    endpoint: str | None  # scheme://host[:port] only: never credentials, paths or queries

    @property
    def channel(self) -> str:
        return CHANNELS.get(self.kind, self.kind)


def endpoint_origin(url: str) -> str | None:
    """``scheme://host[:port]`` of ``url``: what identifies the peer without its user, password,
    path or query (a webhook's path or query often is its secret). None if it has no host."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not parts.scheme or not host:
        return None
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port else "")


def _address(kind: str, settings: Any) -> str | None:
    """The peer address in a connector's settings, read by the names connectors use
    (``endpoint`` or ``url``; ``host`` and ``port``): the core knows no connector's model."""
    for key in ("endpoint", "url"):
        value = getattr(settings, key, None)
        if value is not None:
            return endpoint_origin(str(value))
    host = getattr(settings, "host", None)
    if isinstance(host, str) and host:
        port = getattr(settings, "port", None)
        return endpoint_origin(
            f"{_SCHEMES.get(kind, kind)}://{host}" + (f":{port}" if port else "")
        )
    return None


@dataclass(frozen=True, slots=True)
class LineageContext:
    """``revision`` and ``outputs``: the outputs that mapping revision configured (None:
    unknown); ``tag_sources``: tag id (``asset.tag``) -> its source."""

    gateway_id: str
    tag_sources: MappingABC[str, SourceRef] = field(default_factory=dict)
    revision: str | None = None
    outputs: tuple[OutputRef, ...] | None = None

    @property
    def namespace(self) -> str:
        """The OpenLineage namespace of the gateway's jobs and prediction datasets."""
        return f"bridge://{self.gateway_id}"

    def source_of(self, tag: str) -> SourceRef | None:
        return self.tag_sources.get(tag)

    def unknown_source_namespace(self) -> str:
        """The namespace of a tag whose source is not known here (an export without the
        mapping, or a tag no longer in it)."""
        return f"{self.namespace}/tags"

    def outputs_of(self, revision: str | None) -> tuple[OutputRef, ...] | None:
        """The outputs configured under ``revision``, or None when this context does not know
        them (another revision, or none known)."""
        if revision is None or revision != self.revision:
            return None
        return self.outputs

    @classmethod
    def from_mapping(cls, mapping: Mapping, gateway_id: str | None = None) -> LineageContext:
        """Sources and outputs of a loaded mapping (its connectors are registered then)."""
        from bridge.plugins import destination_kinds

        durable = set(destination_kinds())
        gateway = gateway_id or mapping.gateway.id
        sources: dict[str, SourceRef] = {}
        for name, endpoint in mapping.sources.items():
            address = _address(endpoint.kind, endpoint.settings)
            sources[name] = SourceRef(
                name, endpoint.kind, address or f"bridge://{gateway}/sources/{name}"
            )
        outputs = tuple(
            OutputRef(
                name,
                endpoint.kind,
                endpoint.kind in durable,
                _address(endpoint.kind, endpoint.settings),
            )
            for name, endpoint in sorted(mapping.outputs.items())
        )
        return cls(
            gateway_id=gateway,
            tag_sources={t.id: sources[t.source] for t in mapping.tags.values()},
            revision=mapping.revision,
            outputs=outputs,
        )

    @classmethod
    def from_tag_sources(cls, gateway_id: str, tag_sources: MappingABC[str, str]) -> LineageContext:
        """Only the source name of each tag (tag id -> source name): the API's view of a
        running gateway. The outputs are not known."""
        return cls(
            gateway_id=gateway_id,
            tag_sources={
                tag: SourceRef(source, None, f"bridge://{gateway_id}/sources/{source}")
                for tag, source in tag_sources.items()
            },
        )
