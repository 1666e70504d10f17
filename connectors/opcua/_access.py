"""Who may log in to the prediction server and what a session may do.

asyncua's default user manager grants Admin to any client calling itself ``admin`` (with any
password), and Admin skips every access-level check on writes; here nobody is ever Admin, a wrong
password is refused, and the roles are: ``reader`` (and anonymous, when enabled): browse, read,
subscribe; ``operator``: also the Write service, still bound by each node's AccessLevel, and the
Call service (the feedback methods of predictions). HistoryUpdate is refused for everybody. A
user may also log in with an X.509 user certificate that is configured with a role (pinned by its
DER bytes); any other certificate is refused.

A password may be configured as a scrypt hash. asyncua asks the user manager synchronously, on the
event loop, so the guard calls ``prepare`` first: the scrypt runs in a worker thread and
``get_user`` only reads its verdict. The last good password of each user is remembered as an
HMAC under a key made at start (never the password itself), so a reconnecting HMI costs no scrypt.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from asyncua.crypto import uacrypto
from asyncua.crypto.permission_rules import USER_TYPES, PermissionRuleset, User, UserRole
from asyncua.server.user_managers import UserManager
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.ua_binary import struct_from_binary
from asyncua.ua.uaprotocol_auto import CallParameters
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from bridge.connectors.opcua._passwords import PasswordHash, hash_password, parse_password_hash
from bridge.connectors.opcua.convert import make_node_id
from bridge.connectors.opcua.server_config import OpcUaServerUser

__all__ = [
    "OPERATOR",
    "CertificateRole",
    "ReadOnlyRuleset",
    "ReaderUserManager",
    "RoleUser",
    "UserCertificate",
    "mark_user_certificates",
]

log = structlog.get_logger(__name__)

_WRITE = ObjectIds.WriteRequest_Encoding_DefaultBinary
_CALL = ObjectIds.CallRequest_Encoding_DefaultBinary
_REFUSED = {
    _WRITE,
    _CALL,
    ObjectIds.HistoryUpdateRequest_Encoding_DefaultBinary,
}
OPERATOR = "operator"


@dataclass
class RoleUser(User):
    """asyncua's User plus our role (asyncua knows only Admin/User/Anonymous)."""

    bridge_role: str = "reader"


@dataclass(frozen=True)
class CertificateRole:
    name: str
    role: str


class UserCertificate(bytes):
    """DER bytes of a certificate that came in an X509IdentityToken whose signature asyncua
    verified. asyncua passes the channel's application certificate to ``get_user`` for every
    other token type, so this marker is what tells a user certificate from that one."""


def mark_user_certificates(iserver: Any) -> None:
    """Make ``iserver.verify_x509_token`` hand a ``UserCertificate`` to the user manager."""
    verify: Callable[..., bytes] = iserver.verify_x509_token

    def verified(isession: Any, token: Any, signature: Any) -> bytes:
        return UserCertificate(verify(isession, token, signature))

    iserver.verify_x509_token = verified


class ReadOnlyRuleset(PermissionRuleset):
    def __init__(self) -> None:
        self._allowed = {make_node_id(i, 0) for i in USER_TYPES if i not in _REFUSED}
        # Operators may also call methods (Acknowledge/Confirm/Reject of a prediction).
        self._operator = self._allowed | {make_node_id(_WRITE, 0), make_node_id(_CALL, 0)}
        self._call = make_node_id(_CALL, 0)

    def check_validity(self, user: Any, action_type_id: Any, body: Any) -> bool:
        if user is None:
            return False
        operator = isinstance(user, RoleUser) and user.bridge_role == OPERATOR
        allowed = self._operator if operator else self._allowed
        if action_type_id == self._call and not operator:
            return _only_refresh(body)
        return action_type_id in allowed


# ConditionRefresh(2): any HMI that shows alarms calls it after subscribing (Part 9, 5.5.7),
# so readers may too; every other method stays the operators' (bridge.connectors.opcua._alarms).
_REFRESH = {
    make_node_id(ObjectIds.ConditionType_ConditionRefresh, 0),
    make_node_id(ObjectIds.ConditionType_ConditionRefresh2, 0),
}


def _only_refresh(body: Any) -> bool:
    """Whether a Call request (its undecoded body) calls nothing but ConditionRefresh."""
    try:
        params = struct_from_binary(CallParameters, body.copy())
    except Exception:  # undecodable: refused here, asyncua answers the decoding itself
        return False
    methods = params.MethodsToCall or []
    return bool(methods) and all(m.MethodId in _REFRESH for m in methods)


class ReaderUserManager(UserManager):
    def __init__(
        self,
        allow_anonymous: bool,
        users: Sequence[OpcUaServerUser],
        certificates: Mapping[bytes, CertificateRole] | None = None,
    ) -> None:
        self._allow_anonymous = allow_anonymous
        self._passwords = {u.username: u.password.encode() for u in users if u.password}
        self._hashes = {
            u.username: parse_password_hash(u.password_hash) for u in users if u.password_hash
        }
        self._roles = {u.username: u.role for u in users}
        self._certificates = dict(certificates or {})
        self._key = secrets.token_bytes(32)
        self._good: dict[str, bytes] = {}  # user -> tag of the last password that matched
        self._verdicts: dict[tuple[str, bytes], bool] = {}  # prepared, read once by get_user
        # Unknown names cost a scrypt too, so the time of a refusal does not tell names apart.
        self._decoy = parse_password_hash(hash_password(secrets.token_hex(8)))

    async def prepare(self, username: str, password: str) -> None:
        """Check a hashed password off the event loop before asyncua calls ``get_user``."""
        stored = self._stored_hash(username)
        if stored is None:
            return
        tag = self._tag(password)
        if self._good.get(username) == tag:
            return
        ok = await asyncio.to_thread(stored.matches, password)
        if len(self._verdicts) > 1000:  # prepared but never asked for: do not grow
            self._verdicts.clear()
        self._verdicts[(username, tag)] = ok and username in self._hashes

    def _stored_hash(self, username: str) -> PasswordHash | None:
        if username in self._hashes:
            return self._hashes[username]
        if self._hashes and username not in self._passwords:
            return self._decoy
        return None

    def _tag(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode(), "sha256").digest()

    def _hashed_password_ok(self, username: str, password: str) -> bool:
        tag = self._tag(password)
        if self._good.get(username) == tag:
            return True
        verdict = self._verdicts.pop((username, tag), None)
        if verdict is None:  # not prepared (a direct call): check here, on this thread
            stored = self._stored_hash(username)
            verdict = stored is not None and stored.matches(password) and username in self._hashes
        if verdict:
            self._good[username] = tag
        return verdict

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if isinstance(certificate, UserCertificate):
            return self._certificate_user(certificate)
        # No user name and no user certificate: an anonymous token. (``certificate`` is then
        # the channel's application certificate, which identifies the program, not a user.)
        if username is None:
            return User(role=UserRole.User, name="anonymous") if self._allow_anonymous else None
        if username in self._hashes or (self._hashes and username not in self._passwords):
            if not self._hashed_password_ok(username, password or ""):
                return None
            return RoleUser(role=UserRole.User, name=username, bridge_role=self._roles[username])
        expected = self._passwords.get(username)
        given = (password or "").encode()
        # Compare even for unknown users so timing does not reveal which names exist.
        ok = hmac.compare_digest(expected or b"\0" * 32, given) and expected is not None
        if not ok:
            return None
        return RoleUser(role=UserRole.User, name=username, bridge_role=self._roles[username])

    def _certificate_user(self, data: bytes) -> User | None:
        crypto: Any = uacrypto  # untyped module
        cert: x509.Certificate | None = crypto.x509_from_der(data)  # first one if a chain
        if cert is None:
            return None
        known = self._certificates.get(cert.public_bytes(Encoding.DER))
        if known is None:
            log.warning("unknown_user_certificate", subject=cert.subject.rfc4514_string())
            return None
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            log.warning("user_certificate_out_of_validity", user=known.name)
            return None
        return RoleUser(role=UserRole.User, name=known.name, bridge_role=known.role)
