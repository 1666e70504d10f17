"""Console sessions in memory: they end after their lifetime or when idle, the store is bounded
(least recently used first out), a revoked key's sessions end together, and the CSRF token is
compared exactly."""

from __future__ import annotations

from bridge.api.sessions import ConsoleSession, SessionStore

T0 = 1_700_000_000.0


def test_a_session_is_found_by_its_id_and_tokens_are_random() -> None:
    store = SessionStore()
    one = store.open("brk_key-one", "aaaaaaaaaaaa", now=T0)
    two = store.open("brk_key-one", "aaaaaaaaaaaa", now=T0)
    assert store.get(one.id, now=T0 + 1) is one
    assert store.get(two.id, now=T0 + 1) is two
    assert len(store) == 2
    # Opaque, unguessable and unrelated: the id is not the key, the token is not the id.
    assert len({one.id, two.id, one.csrf, two.csrf}) == 4
    for s in (one, two):
        assert len(s.id) >= 32 and len(s.csrf) >= 32
        assert "brk_key-one" not in s.id and "brk_key-one" not in s.csrf
    for unknown in (None, "", "not-a-session", one.csrf):
        assert store.get(unknown, now=T0 + 1) is None


def test_a_session_ends_after_its_lifetime_even_when_used() -> None:
    store = SessionStore(lifetime_s=100, idle_s=50)
    s = store.open("k", "aaaaaaaaaaaa", now=T0)
    for t in (40, 80, 99.5):  # used every 40 s: never idle
        assert store.get(s.id, now=T0 + t) is s
    assert store.get(s.id, now=T0 + 100.5) is None
    assert len(store) == 0  # dropped, not only refused
    assert store.get(s.id, now=T0 + 1) is None  # and gone for good


def test_a_session_unused_for_the_idle_time_ends_and_use_keeps_it_alive() -> None:
    store = SessionStore(lifetime_s=1000, idle_s=50)
    idle = store.open("k", "aaaaaaaaaaaa", now=T0)
    used = store.open("k", "aaaaaaaaaaaa", now=T0)
    assert store.get(used.id, now=T0 + 45) is used
    assert store.get(used.id, now=T0 + 90) is used  # 45 s after its last use
    assert store.get(idle.id, now=T0 + 50.5) is None
    assert len(store) == 1
    assert store.get(used.id, now=T0 + 141) is None  # now idle too
    assert len(store) == 0


def test_beyond_max_sessions_the_least_recently_used_ends() -> None:
    store = SessionStore(max_sessions=3)
    a, b, c = (store.open("k", "aaaaaaaaaaaa", now=T0 + i) for i in range(3))
    assert store.get(a.id, now=T0 + 3) is a  # a is now the most recently used
    d = store.open("k", "aaaaaaaaaaaa", now=T0 + 4)
    assert len(store) == 3
    assert store.get(b.id, now=T0 + 5) is None
    for kept in (a, c, d):
        assert store.get(kept.id, now=T0 + 5) is kept
    # A script logging in in a loop cannot grow memory.
    opened = [store.open("k", "aaaaaaaaaaaa", now=T0 + 6) for _ in range(1000)]
    assert len(store) == 3
    assert [store.get(s.id, now=T0 + 7) for s in opened[-3:]] == opened[-3:]


def test_close_and_close_key_end_sessions() -> None:
    store = SessionStore()
    mine = [store.open("k1", "111111111111", now=T0) for _ in range(2)]
    other = store.open("k2", "222222222222", now=T0)
    assert store.close_key("111111111111") == 2
    assert all(store.get(s.id, now=T0) is None for s in mine)
    assert store.get(other.id, now=T0) is other
    assert store.close_key("111111111111") == 0
    assert store.close_key("nope") == 0
    store.close(None)
    store.close("not-a-session")
    assert len(store) == 1
    store.close(other.id)
    assert store.get(other.id, now=T0) is None
    assert len(store) == 0


def test_csrf_matches_only_the_sessions_own_token() -> None:
    store = SessionStore()
    s = store.open("k", "aaaaaaaaaaaa", now=T0)
    t = store.open("k", "aaaaaaaaaaaa", now=T0)
    assert s.csrf_matches(s.csrf)
    assert s.csrf_matches("".join(list(s.csrf)))  # equal text, another object
    flipped = s.csrf[:-1] + ("A" if s.csrf[-1] != "A" else "B")
    for wrong in (None, "", t.csrf, s.csrf[:-1], s.csrf + "x", flipped, s.id, s.csrf.upper()):
        if wrong != s.csrf:
            assert not s.csrf_matches(wrong), wrong


def test_a_session_built_by_hand_compares_its_token() -> None:
    s = ConsoleSession("id", "key", "kid", "token-1", T0, T0)
    assert s.csrf_matches("token-1")
    assert not s.csrf_matches("token-2")
    assert not s.csrf_matches(None)
