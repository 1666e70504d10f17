"""Take secrets out of URLs before they are logged or shown: ``https://user:pass@host/x?token=t``
becomes ``https://***@host/x?token=***``.

Destinations are often configured with credentials in the URL (userinfo, or a token in the
query string, as many webhook receivers want); logs and health reports travel further than the
mapping file does.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_text", "redact_url"]

# Query parameter names that carry credentials in the wild (token, api_key, X-Amz-Signature,
# sig, password, client_secret, access_key, session, auth, code, ...).
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|sig|auth|cred|session|code", re.IGNORECASE)
# A URL quoted in prose ends before trailing punctuation ("... https://h/x: refused").
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>.,;:)\]]")
_HIDDEN = "***"


def redact_url(url: str) -> str:
    """``url`` without userinfo and without the values of secret-looking query parameters."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _HIDDEN  # not parseable: nothing of it can be shown safely
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{_HIDDEN}@{netloc.rpartition('@')[2]}"
    query = "&".join(_redact_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    if not netloc and "://" in url:
        # urlunsplit drops the "//" of an empty authority: sqlite:///x.db would become
        # sqlite:/x.db, another URL.
        rest = urlunsplit(("", "", parts.path, query, parts.fragment))
        return f"{parts.scheme}://{rest}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (error messages that quote a URL)."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def _redact_pair(pair: str) -> str:
    name, sep, value = pair.partition("=")
    if sep and value and _SECRET_NAME.search(name):
        return f"{name}={_HIDDEN}"
    return pair
