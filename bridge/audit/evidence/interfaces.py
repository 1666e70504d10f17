"""The gateway's links (API, metrics, sources, outputs, webhooks, store) and their protection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

from bridge.redact import redact_url

from .formatting import _is_loopback, _shown_url

if TYPE_CHECKING:
    from .gather import _Evidence

Verdict = Literal["protected", "weak", "none", "local", "unassessed"]


@dataclass(frozen=True, slots=True)
class _Link:
    name: str  # sources.plant, outputs.mes, gateway.api
    direction: Literal["in", "out"]
    endpoint: str  # redacted
    protection: str
    detail: str
    verdict: Verdict
    exposed: bool  # reachable over a network (not loopback, not a local file or serial line)


def _host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _endpoint(kind: str, settings: Any) -> str:
    """Where a source or output connects, without credentials. Read by attribute: the core
    knows no connector's settings class (the import contracts keep it so)."""
    for attr in ("endpoint", "url"):
        value = getattr(settings, attr, None)
        if isinstance(value, str) and value:
            return redact_url(value)
    host = getattr(settings, "host", None)
    if isinstance(host, str) and host:
        port = getattr(settings, "port", None)
        transport = getattr(settings, "transport", None)
        where = f"{host}:{port}" if port is not None else host
        return f"{where} ({transport})" if isinstance(transport, str) else where
    serial = getattr(settings, "serial", None)
    if serial is not None:
        return f"serial line {getattr(serial, 'port', '?')}"
    return "-"


def _client_tls(tls: Any, default_ca: str) -> str:
    """CA and client certificate of an outgoing TLS connection (bridge.client_tls)."""
    if tls is None:
        return f"server verified against {default_ca}"
    ca = getattr(tls, "ca_file", None)
    parts = [f"server verified against {ca}" if ca else f"server verified against {default_ca}"]
    if getattr(tls, "client_certificate", None):
        parts.append(f"mutual TLS (client certificate {tls.client_certificate})")
    return "; ".join(parts)


def _http_link(name: str, url: str, tls: Any) -> _Link:
    endpoint = redact_url(url)
    exposed = not _is_loopback(_host_of(url))
    if url.lower().startswith("https://"):
        detail = _client_tls(tls, "the public CAs")
        return _Link(name, "out", endpoint, "TLS (https)", detail, "protected", exposed)
    return _Link(name, "out", endpoint, "none: plain HTTP", "http:// URL", "none", exposed)


def _opcua_source(name: str, s: Any) -> _Link:
    sec = getattr(s, "security", None)
    policy = str(getattr(sec, "policy", "None"))
    mode = str(getattr(sec, "mode", "None"))
    endpoint = redact_url(str(getattr(s, "endpoint", "")))
    exposed = not _is_loopback(_host_of(str(getattr(s, "endpoint", ""))))
    if policy == "None":
        return _Link(name, "out", endpoint, "none: security policy None", "", "none", exposed)
    pinned = getattr(sec, "server_certificate", None)
    trust = (
        f"server certificate pinned ({pinned})"
        if pinned
        else f"server certificates from the trust list {getattr(sec, 'pki_dir', '?')}"
    )
    if getattr(sec, "trust_on_first_use", False):
        trust += "; trust on first use is ON (the first server to answer is trusted)"
    verdict: Verdict = "protected" if mode == "SignAndEncrypt" else "weak"
    return _Link(name, "out", endpoint, f"OPC UA {policy} / {mode}", trust, verdict, exposed)


def _opcua_server(name: str, s: Any) -> _Link:
    policies = [str(p) for p in getattr(s, "security_policies", [])]
    endpoint = redact_url(str(getattr(s, "endpoint", "")))
    exposed = not _is_loopback(_host_of(str(getattr(s, "endpoint", ""))))
    detail = f"anonymous login {'allowed' if getattr(s, 'allow_anonymous', False) else 'refused'}"
    verdict: Verdict
    if "None" in policies:
        verdict = "none" if policies == ["None"] else "weak"
        detail += "; security policy None is offered"
    elif all(p.endswith("SignAndEncrypt") for p in policies):
        verdict = "protected"
    else:
        verdict = "weak"
        detail += "; Sign-only policies are offered (signed, not encrypted)"
    protection = "OPC UA " + ", ".join(policies)
    return _Link(name, "in", endpoint, protection, detail, verdict, exposed)


def _mqtt(name: str, direction: Literal["in", "out"], s: Any) -> _Link:
    endpoint = _endpoint("mqtt", s)
    exposed = not _is_loopback(str(getattr(s, "host", "")))
    if getattr(s, "plaintext", False):
        return _Link(name, direction, endpoint, "none: plaintext MQTT", "", "none", exposed)
    tls = getattr(s, "tls", None)
    if getattr(tls, "insecure_skip_verify", False):
        detail = "broker certificate NOT verified (tls.insecure_skip_verify)"
        return _Link(name, direction, endpoint, "TLS", detail, "weak", exposed)
    return _Link(
        name, direction, endpoint, "TLS", _client_tls(tls, "the public CAs"), "protected", exposed
    )


def _endpoint_link(section: str, name: str, kind: str, s: Any) -> _Link:
    where = f"{section}.{name}"
    direction: Literal["in", "out"] = "out"
    if hasattr(s, "security_policies"):
        return _opcua_server(where, s)
    if kind == "opcua" or hasattr(s, "security"):
        return _opcua_source(where, s)
    if hasattr(s, "plaintext"):
        return _mqtt(where, direction, s)
    url = getattr(s, "url", None)
    if isinstance(url, str):
        return _http_link(where, url, getattr(s, "tls", None))
    if kind == "modbus" or hasattr(s, "transport"):
        serial = getattr(s, "transport", "") == "rtu"
        host = str(getattr(s, "host", "") or "")
        return _Link(
            where,
            direction,
            _endpoint(kind, s),
            "none: Modbus has no security layer",
            "isolate it on the cell's network" if not serial else "serial line",
            "none",
            not serial and not _is_loopback(host),
        )
    return _Link(
        where,
        direction,
        _endpoint(kind, s),
        f"not assessed (kind {kind})",
        "",
        "unassessed",
        False,
    )


def _store_link(url: str) -> _Link:
    shown = _shown_url(url)
    backend = url.split(":", 1)[0].split("+", 1)[0]
    if backend == "sqlite":
        return _Link("gateway.store", "out", shown, "local file", "SQLite", "local", False)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    sslmode = (query.get("sslmode") or [""])[0]
    host = parts.hostname or ""
    exposed = bool(host) and not _is_loopback(host)
    if sslmode in ("verify-ca", "verify-full"):
        return _Link(
            "gateway.store", "out", shown, "TLS", f"sslmode={sslmode}", "protected", exposed
        )
    if sslmode == "require":
        detail = "sslmode=require: encrypted, server certificate not verified"
        return _Link("gateway.store", "out", shown, "TLS", detail, "weak", exposed)
    detail = f"sslmode={sslmode}" if sslmode else "no sslmode in the URL: TLS is not required"
    return _Link("gateway.store", "out", shown, "not required", detail, "none", exposed)


def _links(ev: _Evidence) -> list[_Link]:
    g = ev.mapping.gateway
    links: list[_Link] = []
    api = g.api
    if api.enabled:
        scheme = "https" if api.tls is not None else "http"
        endpoint = f"{scheme}://{api.host}:{api.port}"
        exposed = not _is_loopback(api.host)
        if api.tls is not None:
            protection = "TLS"
            detail = f"certificate {api.tls.certificate}"
            if api.tls.client_ca:
                protection = "mutual TLS"
                detail += f"; client certificates signed by {api.tls.client_ca} only"
            links.append(
                _Link("gateway.api", "in", endpoint, protection, detail, "protected", exposed)
            )
        else:
            detail = (
                "insecure_http: true (a TLS proxy or an isolated network must protect it)"
                if exposed
                else "bound to loopback only"
            )
            links.append(
                _Link("gateway.api", "in", endpoint, "none: plain HTTP", detail, "none", exposed)
            )
    address = g.metrics.address
    if address is not None:
        host, port = address
        links.append(
            _Link(
                "gateway.metrics",
                "in",
                f"http://{g.metrics.listen}/metrics",
                "none: plain HTTP",
                f"scrape listener of its own on port {port}",
                "none",
                not _is_loopback(host),
            )
        )
    for name, src in ev.mapping.sources.items():
        links.append(_endpoint_link("sources", name, src.kind, src.settings))
    for name, out in ev.mapping.outputs.items():
        links.append(_endpoint_link("outputs", name, out.kind, out.settings))
    for name, model in ev.mapping.models.items():
        if model.drift is not None and model.drift.webhook:
            where = f"models.{name}.drift.webhook"
            links.append(_http_link(where, model.drift.webhook, model.drift.webhook_tls))
    links.append(_store_link(ev.store_url))
    return links
