"""Section 2, access control: API keys, console and OPC UA logins, the gateway's credentials."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from bridge.auth import Scope

from .controls import family
from .formatting import _one_line, _when, utc
from .model import Block, Facts, Section, _table

if TYPE_CHECKING:
    from .gather import _Evidence


def _age_days(ev: _Evidence, since: float) -> str:
    return f"{max(0.0, ev.now - since) / 86400:.0f}"


def _identity(s: Any) -> str:
    """How the gateway logs in to a source or output: the kind of credential, never its value."""
    if getattr(s, "user_certificate", None):
        return f"X.509 user certificate {s.user_certificate}"
    username = getattr(s, "username", None)
    secret = ""
    if getattr(s, "password_file", None):
        secret = f" (password from the file {s.password_file})"
    elif getattr(s, "password", None) is not None:
        secret = " (password set, not shown)"
    if username:
        return f"user name {username}{secret}"
    parts: list[str] = []
    headers = getattr(s, "headers", None)
    if isinstance(headers, dict) and headers:
        parts.append(f"HTTP headers {', '.join(sorted(headers))} (values not shown)")
    tls = getattr(s, "tls", None)
    if tls is not None and getattr(tls, "client_certificate", None):
        parts.append(f"TLS client certificate {tls.client_certificate}")
    if parts:
        return "; ".join(parts)
    if hasattr(s, "security_policies"):
        return "-"  # the gateway's own server: its logins are listed apart
    return "anonymous" if hasattr(s, "username") or hasattr(s, "security") else "none"


def _server_logins(ev: _Evidence) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for name, out in sorted(ev.mapping.outputs.items()):
        s = out.settings
        if not hasattr(s, "security_policies"):
            continue
        if getattr(s, "allow_anonymous", False):
            rows.append((name, "(anonymous)", "anonymous", "read-only"))
        for user in getattr(s, "users", []):
            how = "scrypt password hash" if user.password_hash else "password (not shown)"
            rows.append((name, str(user.username), how, str(user.role)))
        for cert in getattr(s, "user_certificates", []):
            label = cert.name or "(certificate's common name)"
            rows.append((name, str(label), f"X.509 certificate {cert.certificate}", str(cert.role)))
    return rows


def _access(ev: _Evidence) -> Section:
    g = ev.mapping.gateway
    api = g.api
    active = [k for k in ev.keys if k.active]
    by_scope = Counter(k.scope.label for k in active)
    scopes = ", ".join(f"{by_scope[s.label]} {s.label}" for s in reversed(Scope))
    facts: list[tuple[str, str]] = []
    if api.enabled:
        scheme = "https" if api.tls is not None else "http"
        facts.append(("REST API", f"enabled at {scheme}://{api.host}:{api.port}"))
        open_paths = "/api/v1/health (status only), /livez, /readyz, /docs, /openapi.json"
        if g.metrics.listen is None:
            open_paths += ", /metrics"
        facts.append(
            (
                "API keys required",
                "yes: every other /api/v1 operation needs a key of the scope it names "
                f"(Authorization: Bearer or X-API-Key); open without a key: {open_paths}",
            )
        )
    else:
        facts.append(("REST API", "disabled (gateway.api.enabled: false): no key is accepted"))
    facts += [
        (
            "Scopes",
            "read; operate: also acknowledge alerts, operator feedback, outbox retries; "
            "admin: also API keys, models, mapping reload, the audit ledger; insights (apart): "
            "the anonymised insights only (GET /api/v1/insights), which admin may read too",
        ),
        ("API keys", f"{len(active)} active ({scopes}), {len(ev.keys) - len(active)} revoked"),
        (
            "Key storage",
            "only the sha256 of each key is stored; a key is shown once, when it is created",
        ),
        (
            "Rate limits per key",
            f"{api.rate_limit_per_s:g} requests/s, bursts of {api.rate_burst}, "
            f"{api.max_concurrent_per_key} at once",
        ),
    ]
    console = api.console
    if api.enabled and console.enabled:
        secure = "Secure" if api.tls is not None else "not Secure (plain HTTP)"
        facts.append(
            (
                "Console login",
                f"/console: log in with an API key; the browser holds a session cookie only "
                f"(HttpOnly, SameSite=Strict, {secure}); a session lasts at most "
                f"{console.session_hours:g} h and ends after {console.idle_minutes:g} min "
                "unused; failed logins are throttled",
            )
        )
    else:
        facts.append(("Console login", "console disabled"))
    keys = _table(
        "API keys (never the keys or their hashes)",
        ("Key id", "Name", "Scope", "Created", "Age (days)", "Status"),
        (
            (
                k.key_id,
                k.name,
                k.scope.label,
                utc(k.created_at),
                _age_days(ev, k.created_at),
                "active" if k.revoked_at is None else f"revoked {utc(k.revoked_at)}",
            )
            for k in ev.keys
        ),
        empty="No API key.",
    )
    blocks: list[Block] = [Facts(tuple(facts)), keys]
    servers = [o for o in ev.mapping.outputs.values() if hasattr(o.settings, "security_policies")]
    if servers:
        blocks.append(
            _table(
                "OPC UA server logins (HMIs)",
                ("Output", "Login", "Credential", "Role"),
                _server_logins(ev),
                empty="No login configured: no client can open a session.",
            )
        )
        lockouts = tuple(
            (
                f"outputs.{o.name}.login_lockout",
                f"after {o.settings.login_lockout.after_failures} failures in a row: "
                f"{o.settings.login_lockout.first_lockout_s:g} s, doubling up to "
                f"{o.settings.login_lockout.max_lockout_s:g} s",
            )
            for o in servers
            if getattr(o.settings, "login_lockout", None) is not None
        )
        if lockouts:
            blocks.append(Facts(lockouts, "Failed logins"))
    identities = [
        (f"sources.{n}", s.kind, _identity(s.settings))
        for n, s in sorted(ev.mapping.sources.items())
    ] + [
        (f"outputs.{n}", o.kind, _identity(o.settings))
        for n, o in sorted(ev.mapping.outputs.items())
        if not hasattr(o.settings, "security_policies")
    ]
    blocks.append(
        _table(
            "Credentials the gateway presents to the plant and the MES",
            ("Connection", "Kind", "Identity"),
            identities,
        )
    )
    entries = ev.ledger.kept["apikey"]
    blocks.append(
        _table(
            "API key changes in the period",
            ("When (UTC)", "Action", "Key", "Actor", "Channel", "Reason"),
            (
                (_when(e), e.action, e.subject, e.actor, e.channel, _one_line(e.reason))
                for e in entries
            ),
            empty="No API key created or revoked in the period.",
            more=ev.ledger.left_out["apikey"],
            more_hint=ev.more_hint("apikey."),
        )
    )
    return Section(family("access"), tuple(blocks))
