"""Who may log in to the prediction server and what a session may do.

asyncua's default user manager grants Admin to any client calling itself ``admin`` (with any
password), and Admin skips every access-level check on writes; here nobody is ever Admin, a wrong
password is refused, and the roles are: ``reader`` (and anonymous, when enabled): browse, read,
subscribe; ``operator``: also the Write service, still bound by each node's AccessLevel. Call and
HistoryUpdate are refused for everybody.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asyncua.crypto.permission_rules import USER_TYPES, PermissionRuleset, User, UserRole
from asyncua.server.user_managers import UserManager
from asyncua.ua.object_ids import ObjectIds

from connectors.opcua.convert import make_node_id
from connectors.opcua.server_config import OpcUaServerUser

__all__ = ["OPERATOR", "ReadOnlyRuleset", "ReaderUserManager", "RoleUser"]

_WRITE = ObjectIds.WriteRequest_Encoding_DefaultBinary
_REFUSED = {
    _WRITE,
    ObjectIds.CallRequest_Encoding_DefaultBinary,
    ObjectIds.HistoryUpdateRequest_Encoding_DefaultBinary,
}
OPERATOR = "operator"


@dataclass
class RoleUser(User):
    """asyncua's User plus our role (asyncua knows only Admin/User/Anonymous)."""

    bridge_role: str = "reader"


class ReadOnlyRuleset(PermissionRuleset):
    def __init__(self) -> None:
        self._allowed = {make_node_id(i, 0) for i in USER_TYPES if i not in _REFUSED}
        self._operator = self._allowed | {make_node_id(_WRITE, 0)}

    def check_validity(self, user: Any, action_type_id: Any, body: Any) -> bool:
        if user is None:
            return False
        operator = isinstance(user, RoleUser) and user.bridge_role == OPERATOR
        allowed = self._operator if operator else self._allowed
        return action_type_id in allowed


class ReaderUserManager(UserManager):
    def __init__(self, allow_anonymous: bool, users: Sequence[OpcUaServerUser]) -> None:
        self._allow_anonymous = allow_anonymous
        self._passwords = {u.username: u.password.encode() for u in users}
        self._roles = {u.username: u.role for u in users}

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        # X509 identity tokens are never offered, so no user name means an anonymous token.
        # (``certificate`` is the channel's application certificate here, not a user's.)
        if username is None:
            return User(role=UserRole.User, name="anonymous") if self._allow_anonymous else None
        expected = self._passwords.get(username)
        given = (password or "").encode()
        # Compare even for unknown users so timing does not reveal which names exist.
        ok = hmac.compare_digest(expected or b"\0" * 32, given) and expected is not None
        if not ok:
            return None
        return RoleUser(role=UserRole.User, name=username, bridge_role=self._roles[username])
