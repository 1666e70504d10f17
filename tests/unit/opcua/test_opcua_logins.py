"""Login throttling per peer (pure, time as a parameter) and scrypt password hashes."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from bridge.connectors.opcua._access import ReaderUserManager
from bridge.connectors.opcua._passwords import hash_password, parse_password_hash
from bridge.connectors.opcua._throttle import LoginThrottle
from bridge.connectors.opcua.server_config import OpcUaServerUser


def test_lockout_after_failures_doubles_and_is_per_peer() -> None:
    throttle = LoginThrottle(after_failures=3, first_lockout_s=2.0, max_lockout_s=5.0)
    assert [throttle.failed("10.0.0.5", 0.0) for _ in range(2)] == [0.0, 0.0]
    assert throttle.locked_for("10.0.0.5", 0.0) == 0.0
    assert throttle.failed("10.0.0.5", 1.0) == 2.0  # third failure: locked out
    assert throttle.locked_for("10.0.0.5", 2.0) == 1.0
    assert throttle.locked_for("10.0.0.6", 2.0) == 0.0  # another HMI is not affected
    assert throttle.failed("10.0.0.5", 3.0) == 4.0
    assert throttle.failed("10.0.0.5", 7.0) == 5.0  # capped
    throttle.succeeded("10.0.0.5")
    assert throttle.locked_for("10.0.0.5", 7.5) == 0.0 and throttle.failures("10.0.0.5") == 0


def test_throttle_memory_is_bounded() -> None:
    throttle = LoginThrottle(max_peers=3)
    for i in range(10):
        throttle.failed(f"10.0.0.{i}", float(i))
    assert throttle.failures("10.0.0.9") == 1 and throttle.failures("10.0.0.0") == 0


def test_password_hash_round_trip_and_format() -> None:
    encoded = hash_password("correct horse", n=1024)
    scheme, n, r, p, _salt, _digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "1024", "8", "1")
    parsed = parse_password_hash(encoded)
    assert parsed.matches("correct horse") and not parsed.matches("correct hors")
    assert hash_password("correct horse", n=1024) != encoded  # salted


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("plain-text", "must look like scrypt"),
        ("scrypt$1000$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "power of two"),
        ("scrypt$1024$8$1$!!$aGFzaA", "bad number or base64"),
        ("scrypt$1024$8$1$c2FsdA$aGFzaA", "short"),
    ],
)
def test_bad_password_hash_says_how_to_make_one(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_password_hash(text)


def test_user_needs_exactly_one_of_password_and_hash() -> None:
    with pytest.raises(ValidationError, match="exactly one of password"):
        OpcUaServerUser(username="a")
    with pytest.raises(ValidationError, match="exactly one of password"):
        OpcUaServerUser(username="a", password="x", password_hash=hash_password("x", n=1024))
    with pytest.raises(ValidationError, match="bridge certs hash-password"):
        OpcUaServerUser(username="a", password_hash="md5$abc")


def test_hashed_user_checked_off_the_loop_then_remembered() -> None:
    users = [
        OpcUaServerUser(username="h", password_hash=hash_password("pw", n=1024), role="operator"),
        OpcUaServerUser(username="p", password="plain"),
    ]
    manager = ReaderUserManager(allow_anonymous=False, users=users)
    asyncio.run(manager.prepare("h", "pw"))
    user = manager.get_user(None, "h", "pw")
    assert user is not None and user.name == "h"
    assert manager.get_user(None, "h", "pw") is not None  # remembered
    assert manager.get_user(None, "h", "bad") is None  # not prepared: checked in place
    asyncio.run(manager.prepare("ghost", "pw"))  # unknown name: a decoy scrypt, refused
    assert manager.get_user(None, "ghost", "pw") is None
    assert manager.get_user(None, "p", "plain") is not None
    assert manager.get_user(None, "p", "pw") is None


def test_hash_password_command() -> None:
    from click.testing import CliRunner

    from bridge.connectors.opcua.cli import certs

    done = CliRunner().invoke(certs, ["hash-password", "--stdin", "--n", "1024"], input="pw\n")
    assert done.exit_code == 0, done.output
    assert parse_password_hash(done.output.strip()).matches("pw")
    bad = CliRunner().invoke(certs, ["hash-password", "--stdin", "--n", "1000"], input="pw\n")
    assert bad.exit_code == 1 and "error:" in bad.output
