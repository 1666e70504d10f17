"""Failed logins throttled per peer address: after ``after_failures`` failures in a row a peer is
locked out, for ``first_lockout_s`` and then twice as long after each further failure (at most
``max_lockout_s``); a successful login clears it. Other peers are not affected, so one HMI that
guesses (or is misconfigured) does not lock out the others.

Pure: time is a parameter (seconds of a monotonic clock), nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LoginThrottle"]


@dataclass(slots=True)
class _Peer:
    failures: int = 0
    until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    def __init__(
        self,
        *,
        after_failures: int = 5,
        first_lockout_s: float = 1.0,
        max_lockout_s: float = 300.0,
        max_peers: int = 10_000,
    ) -> None:
        self.after_failures = after_failures
        self.first_lockout_s = first_lockout_s
        self.max_lockout_s = max_lockout_s
        self.max_peers = max_peers
        self._peers: dict[str, _Peer] = {}

    def locked_for(self, peer: str, now: float) -> float:
        """Seconds ``peer`` stays locked out (0.0: it may try)."""
        state = self._peers.get(peer)
        return max(0.0, state.until - now) if state is not None else 0.0

    def failed(self, peer: str, now: float) -> float:
        """Count a failed login; the length of the lockout it starts (0.0: none yet)."""
        state = self._peers.get(peer)
        if state is None:
            self._forget_oldest()
            state = self._peers[peer] = _Peer()
        state.failures += 1
        state.last = now
        over = state.failures - self.after_failures
        if over < 0:
            return 0.0
        # Not a retry of ours (bridge.retry): a penalty on someone else's guesses, so it doubles
        # exactly, without jitter, and a peer cannot draw a short lockout by luck.
        lockout = min(self.max_lockout_s, self.first_lockout_s * 2.0 ** min(over, 32))
        state.until = now + lockout
        return lockout

    def succeeded(self, peer: str) -> None:
        self._peers.pop(peer, None)

    def failures(self, peer: str) -> int:
        state = self._peers.get(peer)
        return state.failures if state is not None else 0

    def _forget_oldest(self) -> None:
        # Bounded memory when many addresses fail: the peer idle the longest is forgotten.
        if len(self._peers) >= self.max_peers:
            oldest = min(self._peers, key=lambda p: self._peers[p].last)
            del self._peers[oldest]
