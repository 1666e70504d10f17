"""API keys: format, hashing, constant-time check and scope order (pure)."""

from __future__ import annotations

import hashlib

import pytest

from bridge.auth import ApiKeyError, Scope, generate_key, hash_key, keys_match, parse_key_id


def test_generated_keys_are_unique_parseable_and_only_hashed() -> None:
    keys = [generate_key() for _ in range(200)]
    assert len({k.key for k in keys}) == len({k.key_id for k in keys}) == 200
    for k in keys[:20]:
        assert k.key.startswith(f"brk_{k.key_id}_")
        assert parse_key_id(k.key) == k.key_id
        assert k.key_hash == hashlib.sha256(k.key.encode()).hexdigest()
        assert k.key not in k.key_hash
        assert keys_match(k.key, k.key_hash)


def test_a_key_differing_in_one_character_does_not_match() -> None:
    k = generate_key()
    flipped = k.key[:-1] + ("A" if k.key[-1] != "A" else "B")
    assert parse_key_id(flipped) == k.key_id  # same id: the row is found, the secret is wrong
    assert not keys_match(flipped, k.key_hash)
    assert not keys_match(k.key, hash_key(generate_key().key))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "brk_",
        "Bearer brk_0123456789ab_" + "a" * 43,
        "brk_0123456789AB_" + "a" * 43,  # id is lower-case hex
        "brk_0123456789ab_" + "a" * 42,
        "brk_0123456789ab_" + "a" * 44,
        "brk_0123456789ab_" + "a" * 42 + "=",
        "xyz_0123456789ab_" + "a" * 43,
        "brk_0123456789ab_" + "a" * 42 + "\u00e9",
    ],
)
def test_malformed_keys_are_rejected_without_echo(text: str) -> None:
    with pytest.raises(ApiKeyError) as err:
        parse_key_id(text)
    assert text[5:] not in str(err.value) or not text[5:]


def test_scopes_are_ordered() -> None:
    assert Scope.READ < Scope.OPERATE < Scope.ADMIN
    assert Scope.ADMIN.allows(Scope.READ) and Scope.ADMIN.allows(Scope.OPERATE)
    assert Scope.OPERATE.allows(Scope.READ) and not Scope.OPERATE.allows(Scope.ADMIN)
    assert not Scope.READ.allows(Scope.OPERATE)
    assert [Scope.parse(s.label) for s in Scope] == list(Scope)
    assert Scope.parse(" Operate ") is Scope.OPERATE
    with pytest.raises(ValueError, match="unknown scope 'root'"):
        Scope.parse("root")
