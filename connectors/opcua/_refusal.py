"""Why a secure connection or a login failed, in words an operator can act on.

asyncua reports a refusal as a bare status exception (``BadCertificateUntrusted(2149187584)``)
or, when the server answers OpenSecureChannel with a ServiceFault (the way many SDK servers refuse
an untrusted client certificate), as a bare ``AssertionError()``: its client parses the fault as
an OpenSecureChannelResponse, fails, and the status is lost. ``watch_open_faults`` reads the status
from that answer before asyncua does; ``explain`` turns a failure into the status, what it means
here and what to do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes, get_name_and_doc
from asyncua.ua.ua_binary import nodeid_from_binary, struct_from_binary
from cryptography import x509

from bridge.connectors.opcua.config import OpcUaSourceSettings
from bridge.connectors.opcua.convert import make_node_id, status_name
from bridge.connectors.opcua.trust import UntrustedCertificate

__all__ = ["Attempt", "explain", "status_of", "watch_open_faults"]

_BAD = 0x80000000
_FAULT = make_node_id(ObjectIds.ServiceFault_Encoding_DefaultBinary, 0)

# The server does not accept the gateway's application certificate (not trusted, wrong use,
# revoked, or it cannot check its chain). BadSecurityChecksFailed is what most servers answer
# to an untrusted certificate on the secure channel: it deliberately says no more.
_OUR_CERTIFICATE = {
    StatusCodes.BadSecurityChecksFailed,
    StatusCodes.BadCertificateUntrusted,
    StatusCodes.BadCertificateInvalid,
    StatusCodes.BadCertificateChainIncomplete,
    StatusCodes.BadCertificateRevoked,
    StatusCodes.BadCertificateIssuerRevoked,
    StatusCodes.BadCertificateRevocationUnknown,
    StatusCodes.BadCertificateIssuerRevocationUnknown,
    StatusCodes.BadCertificateUseNotAllowed,
    StatusCodes.BadCertificateIssuerUseNotAllowed,
    StatusCodes.BadCertificateIssuerTimeInvalid,
    StatusCodes.BadCertificatePolicyCheckFailed,
    StatusCodes.BadCertificateHostNameInvalid,
    StatusCodes.BadNoValidCertificates,
    StatusCodes.BadApplicationSignatureInvalid,
}
_LOGIN = {
    StatusCodes.BadIdentityTokenRejected,
    StatusCodes.BadIdentityTokenInvalid,
    StatusCodes.BadUserAccessDenied,
    StatusCodes.BadUserSignatureInvalid,
}
_POLICY = {StatusCodes.BadSecurityPolicyRejected, StatusCodes.BadSecurityModeRejected}


@dataclass
class Attempt:
    """What one connection attempt saw besides the exception asyncua raises."""

    certificate: bytes | None = None  # the gateway's application certificate (DER)
    open_fault: int | None = None  # status of a ServiceFault answering OpenSecureChannel
    refused_server: UntrustedCertificate | None = None  # the gateway's trust list said no
    reached: bool = False  # the session's TCP connection was made
    channel_opened: bool = False  # the server answered OpenSecureChannel without a fault


def watch_open_faults(client: Client, attempt: Attempt) -> None:
    """Record in ``attempt`` the status of a ServiceFault that answers OpenSecureChannel.

    Hooks asyncua internals (``UaClient._make_protocol``, the protocol's
    ``_process_received_message``): re-check on every asyncua upgrade. If they change, the hook
    is not installed and ``explain`` falls back to saying the channel was refused.
    """
    uaclient: Any = client.uaclient
    make_protocol: Callable[[], Any] | None = getattr(uaclient, "_make_protocol", None)
    if make_protocol is None:
        return

    def make_watched() -> Any:
        # asyncio calls the factory once the TCP connection is made
        attempt.reached = True
        protocol = make_protocol()
        process: Callable[[Any], None] | None = getattr(protocol, "_process_received_message", None)
        if process is None:
            return protocol

        def watched(msg: Any) -> None:
            # Only OpenSecureChannel answers carry an asymmetric header: one isinstance per
            # message, the publish path pays nothing more.
            if isinstance(msg, ua.Message) and isinstance(
                msg.SecurityHeader(),  # type: ignore[no-untyped-call]
                ua.AsymmetricAlgorithmHeader,
            ):
                status = _fault_status(msg)
                if status is None:
                    attempt.channel_opened = True
                else:
                    attempt.open_fault = status
            process(msg)

        protocol._process_received_message = watched
        return protocol

    uaclient._make_protocol = make_watched


def _fault_status(msg: ua.Message) -> int | None:
    try:
        body = msg.body()  # type: ignore[no-untyped-call]  # a fresh buffer, not asyncua's
        if nodeid_from_binary(body) != _FAULT:
            return None
        header = struct_from_binary(ua.ResponseHeader, body)
        return int(header.ServiceResult.value)
    except Exception:  # an answer we cannot read is asyncua's to report
        return None


def status_of(exc: BaseException) -> int | None:
    """The OPC UA status code carried by ``exc`` or an exception it was raised from."""
    seen: BaseException | None = exc
    for _ in range(8):  # chains are short; bounded against cycles
        if seen is None:
            return None
        code = getattr(seen, "code", None)
        if isinstance(code, int) and code & _BAD:
            return code
        seen = seen.__cause__ or seen.__context__
    return None


def explain(exc: BaseException, settings: OpcUaSourceSettings, attempt: Attempt) -> str:
    """One line: the OPC UA status, what it means here and what to do. Failures that are no
    refusal (a refused TCP connection, a timeout) keep their ``repr``."""
    refused = attempt.refused_server
    if refused is not None:
        return (
            f"{_name(refused.status)}: the gateway does not trust the server's certificate: "
            f"{refused.reason}; it was filed as "
            f"{settings.security.pki_dir}/rejected/{refused.thumbprint}.der (thumbprint "
            f"{refused.thumbprint}, {refused.subject}); fix: compare the thumbprint with the "
            f"server's, then run: {refused.command}"
        )
    status = status_of(exc)
    if status is None:
        status = attempt.open_fault
    if status is None and _channel_refused(exc, settings, attempt):
        # Some servers refuse an untrusted certificate by closing the connection, or by an
        # answer asyncua cannot read: no status, but the likely cause is the same.
        return (
            "the server closed or refused the secure channel without a readable status "
            f"(asyncua: {exc!r}); servers do this when they do not trust the gateway's "
            f"certificate; fix: on the server, trust {_our_certificate(settings, attempt)}"
        )
    if status is None:
        return repr(exc)
    name = _name(status)
    if status == StatusCodes.BadCertificateUriInvalid:
        return (
            f"{name}: the server says the ApplicationUri {settings.security.application_uri} is "
            f"not the URI in the certificate {_our_certificate(settings, attempt)} "
            f"(it has {_san_uris(attempt) or 'none'}); fix: set security.application_uri to the "
            "certificate's URI, or re-create the certificate with `bridge certs create "
            f"--application-uri {settings.security.application_uri}` and trust it on the server"
        )
    if status == StatusCodes.BadCertificateTimeInvalid:
        return (
            f"{name}: the server finds the gateway's certificate "
            f"{_our_certificate(settings, attempt)} outside its validity; fix: create a new one "
            "(`bridge certs create --force`) and trust it on the server"
        )
    if status in _OUR_CERTIFICATE:
        return (
            f"{name}: the server refused the gateway's application certificate "
            f"{_our_certificate(settings, attempt)}; fix: on the server, trust that certificate "
            "(add it to the server's trusted certificates, or accept it in the server's "
            "certificate management)"
        )
    if status in _LOGIN:
        return f"{name}: {_login_advice(settings)}"
    if status in _POLICY:
        return (
            f"{name}: the server does not offer security policy {settings.security.policy} "
            f"with mode {settings.security.mode}; fix: choose a policy and mode the server offers"
        )
    return f"{name}: {get_name_and_doc(status)[1]}"


def _channel_refused(exc: BaseException, settings: OpcUaSourceSettings, attempt: Attempt) -> bool:
    if settings.security.policy == "None" or not attempt.reached or attempt.channel_opened:
        return False
    return isinstance(exc, (AssertionError, ConnectionError, TimeoutError, EOFError))


def _login_advice(settings: OpcUaSourceSettings) -> str:
    if settings.user_certificate:
        return (
            f"the server refused the user certificate {settings.user_certificate}; fix: register "
            "that certificate as a user on the server, or check user_private_key belongs to it"
        )
    if settings.username is not None:
        secret = "password_file" if settings.password_file else "password"
        return (
            f"the server refused the login of user {settings.username!r}; fix: check the user "
            f"name and the {secret}, and that the server knows this user"
        )
    return (
        "the server refused an anonymous login; fix: give username and password, or "
        "user_certificate and user_private_key"
    )


def _our_certificate(settings: OpcUaSourceSettings, attempt: Attempt) -> str:
    path = settings.security.certificate or "(no certificate)"
    if attempt.certificate is None:
        return path
    thumbprint = hashlib.sha1(attempt.certificate).hexdigest()
    return f"{path} (thumbprint {thumbprint}, ApplicationUri {settings.security.application_uri})"


def _san_uris(attempt: Attempt) -> str:
    if attempt.certificate is None:
        return ""
    try:
        cert = x509.load_der_x509_certificate(attempt.certificate)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return ""
    return ", ".join(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def _name(status: int) -> str:
    return status_name(status)
