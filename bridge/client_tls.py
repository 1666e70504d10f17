"""TLS of the gateway's outgoing HTTPS calls (MES REST, retraining webhook): which CA to trust
and which client certificate to present.

A plant usually runs its own CA: ``ca_file`` makes the gateway trust exactly that CA (not the
public ones), so the MES keeps https instead of someone "fixing" it with http. A server that
asks for mutual TLS gets ``client_certificate`` / ``client_key``. The files are read when the
mapping is validated, so a missing file, a key that does not belong to its certificate or a
file that is not PEM stops `bridge validate` with the key to fix, not the first delivery.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

__all__ = ["ClientTls", "ClientTlsError", "describe_tls_failure", "require_https"]

_PATH_HINT = "relative paths are relative to the directory bridge is started in"


class ClientTlsError(ValueError):
    """A TLS file that cannot be used; ``hint`` says how to fix it."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(f"{message} (fix: {hint})")
        self.message = message
        self.hint = hint


class ClientTls(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: str | None = Field(
        None,
        description="PEM file with the CA certificate(s) that signed the server's certificate "
        "(e.g. the plant CA). Only these CAs are trusted. Default: the public CAs (certifi).",
    )
    client_certificate: str | None = Field(
        None,
        description="PEM certificate (optionally followed by its chain) the gateway presents "
        "when the server asks for one (mutual TLS). Goes with `client_key`.",
    )
    client_key: str | None = Field(
        None,
        description="PEM private key of `client_certificate`, unencrypted (keep the file "
        "readable by the gateway's user only, mode 0600).",
    )

    @model_validator(mode="after")
    def _files_load(self) -> ClientTls:
        if (self.client_certificate is None) != (self.client_key is None):
            raise PydanticCustomError(
                "client_tls",
                "client_certificate and client_key go together",
                {"hint": "give both (the certificate and its private key) or neither"},
            )
        try:
            self.ssl_context()
        except ClientTlsError as exc:
            raise PydanticCustomError(
                "client_tls", "{message}", {"message": exc.message, "hint": exc.hint}
            ) from None
        return self

    def ssl_context(self) -> ssl.SSLContext:
        """A client context: server certificates verified against ``ca_file`` (host name
        checked), TLS 1.2 at least, the client certificate loaded when given. The files are
        read again here (at start too): ``ClientTlsError`` if one has gone or changed."""
        for key, path in (
            ("ca_file", self.ca_file),
            ("client_certificate", self.client_certificate),
            ("client_key", self.client_key),
        ):
            if path is not None and not Path(path).is_file():
                raise ClientTlsError(
                    f"{key}: no such file: {path}", f"check the path; {_PATH_HINT}"
                )
        try:
            context = ssl.create_default_context(cafile=self.ca_file or certifi.where())
        except ssl.SSLError as exc:
            reason = exc.reason or exc.strerror or str(exc)
            raise ClientTlsError(
                f"ca_file {self.ca_file} holds no usable CA certificate ({reason})",
                "give the PEM file of the CA that signed the server's certificate",
            ) from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.client_certificate is not None:
            try:
                context.load_cert_chain(self.client_certificate, self.client_key)
            except ssl.SSLError as exc:
                raise ClientTlsError(
                    "client_key does not belong to client_certificate"
                    if "KEY_VALUES_MISMATCH" in str(exc)
                    else f"client_certificate or client_key cannot be loaded ({exc.reason or exc})",
                    "give the PEM certificate and its own unencrypted PEM key",
                ) from None
        return context


def require_https(url: str, tls: ClientTls | None, where: str) -> None:
    """TLS settings with an http:// URL would be silently unused: refuse the pair."""
    if tls is not None and not url.lower().startswith("https://"):
        raise PydanticCustomError(
            "client_tls",
            "{where} is set but the URL is not https://: the call would go unencrypted",
            {"where": where, "hint": "write the URL with https://, or remove the TLS settings"},
        )


def describe_tls_failure(
    exc: BaseException, setting: str, *, https: bool = True, client_certificate: bool = False
) -> str | None:
    """What to do about a failed TLS connection (``setting``: where the TLS block sits in the
    mapping, e.g. ``outputs.mes.tls``), or None when ``exc`` does not look like one. HTTP
    clients wrap the ``ssl`` error: the cause chain is searched."""
    if not https:
        return None
    reset = False
    seen: BaseException | None = exc
    for _ in range(10):  # a bounded walk: chains can be cyclic
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            reason = seen.verify_message or seen.reason or str(seen)
            return (
                f"TLS: the server's certificate was refused (certificate verify failed: "
                f"{reason}); if the server uses a plant CA, set {setting}.ca_file to that CA's "
                "PEM certificate"
            )
        if isinstance(seen, ssl.SSLError):
            reason = seen.reason or str(seen)
            return f"TLS handshake failed ({reason}){_client_hint(setting, client_certificate)}"
        reset = reset or isinstance(seen, ConnectionResetError)
        seen = seen.__cause__ or seen.__context__
    if reset and not client_certificate:
        # TLS 1.3 servers check the client certificate after the handshake: a server that
        # wants one and gets none just resets the connection (measured with uvicorn).
        return "the server reset the TLS connection (connection reset by peer)" + _client_hint(
            setting, client_certificate
        )
    return None


def _client_hint(setting: str, client_certificate: bool) -> str:
    if client_certificate:
        return ""
    return (
        f"; if the server requires a client certificate (mutual TLS), set "
        f"{setting}.client_certificate and {setting}.client_key"
    )
