"""A Modbus-TCP-aware fault injector for tests: a proxy that parses MBAP frames and replaces
chosen replies with malformed ones. ``tests/faultproxy.py`` works on raw byte chunks (garbage,
truncation, blackhole, RST); this one forges frames that *look* like answers, which is what a
client must reject field by field.

Every forged reply carries altered data (registers + 1, bits flipped), so a forged frame
that a client accepted shows up as a wrong value: the test compares every Good value with the
truth. Kinds:

- ``tid_zero``       transaction id 0 (pymodbus accepts it for any request)
- ``stale_tid``      a reply with the previous request's transaction id (a late reply), then
                     the real one
- ``wrong_unit``     a reply from another unit id, then the real one
- ``wrong_fc``       FC4 for FC3 (and back), FC2 for FC1 (and back)
- ``short``/``long`` one register (or one byte of bits) less / more, header consistent
- ``count_lie``      byte count field disagrees with the data that follows
- ``length_lie``     MBAP length field one byte short of the frame
- ``exception``      an exception reply with a random exception code
- ``bare_exception`` an exception function code with no exception code byte
- ``truncated``      the first part of the real frame only (the rest never comes)
- ``noise``          a few random bytes instead of a frame

It also counts pipelined requests: a request that arrives while an earlier one on the same
connection is still unanswered and younger than ``patience_s`` (the client's timeout; after
that the client may rightly have given up on it). A client that keeps one request in flight
never pipelines.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections import Counter
from collections.abc import Callable

from support import LOOPBACK, free_port

__all__ = ["FAST_KINDS", "KINDS", "SLOW_KINDS", "ModbusFaultProxy"]

FAST_KINDS: tuple[str, ...] = (
    "tid_zero",
    "stale_tid",
    "wrong_unit",
    "wrong_fc",
    "short",
    "long",
    "count_lie",
    "length_lie",
    "exception",
    "bare_exception",
)
# The client can only find out by waiting for its timeout.
SLOW_KINDS: tuple[str, ...] = ("truncated", "noise")
KINDS = FAST_KINDS + SLOW_KINDS

_OTHER_FC = {1: 2, 2: 1, 3: 4, 4: 3}

# (unit, function code) of a request -> kind of forged reply, or None to pass the real one.
Chooser = Callable[[int, int], str | None]


def _alter(fc: int, data: bytes) -> bytes:
    if fc in (1, 2):
        return bytes(b ^ 0xFF for b in data)
    words = struct.unpack(f">{len(data) // 2}H", data)
    return struct.pack(f">{len(words)}H", *((w + 1) & 0xFFFF for w in words))


def _frame(tid: int, unit: int, pdu: bytes, length: int | None = None) -> bytes:
    size = len(pdu) + 1 if length is None else length
    return struct.pack(">HHHB", tid, 0, size, unit) + pdu


def forge(kind: str, rng: random.Random, tid: int, unit: int, reply_pdu: bytes) -> bytes:
    """The bytes sent instead of the real reply ``reply_pdu`` (FC + byte count + data)."""
    fc = reply_pdu[0]
    # If the device itself answered with an exception there is no data to alter.
    data = b"" if fc & 0x80 else _alter(fc, reply_pdu[2:])
    width = 1 if fc in (1, 2) else 2

    def body(f: int = fc, d: bytes = data) -> bytes:
        return bytes([f, len(d)]) + d

    if kind == "tid_zero":
        return _frame(0, unit, body())
    real = _frame(tid, unit, reply_pdu)
    if kind == "stale_tid":
        return _frame((tid - 1) & 0xFFFF or 0xFFFF, unit, body()) + real
    if kind == "wrong_unit":
        return _frame(tid, (unit % 247) + 1, body()) + real
    if kind == "wrong_fc":
        return _frame(tid, unit, body(_OTHER_FC.get(fc & 0x7F, 3)))
    if kind == "short":
        return _frame(tid, unit, body(d=data[:-width]))
    if kind == "long":
        return _frame(tid, unit, body(d=data + bytes(width)))
    if kind == "count_lie":
        return _frame(tid, unit, bytes([fc, len(data) + 2 * width]) + data)
    if kind == "length_lie":
        pdu = body()
        return _frame(tid, unit, pdu, length=len(pdu))
    if kind == "exception":
        return _frame(tid, unit, bytes([(fc & 0x7F) | 0x80, rng.choice((1, 2, 3, 4, 6, 11))]))
    if kind == "bare_exception":
        return _frame(tid, unit, bytes([(fc & 0x7F) | 0x80]))
    if kind == "truncated":
        whole = _frame(tid, unit, body())
        return whole[: rng.randint(1, len(whole) - 1)]
    if kind == "noise":
        return rng.randbytes(rng.randint(1, 12))
    raise ValueError(f"unknown kind {kind!r}")


class ModbusFaultProxy:
    """Proxy on 127.0.0.1 in front of a Modbus TCP server at ``target_port``."""

    def __init__(
        self, target_port: int, choose: Chooser, *, patience_s: float, seed: int = 1
    ) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.choose = choose
        self.rng = random.Random(seed)
        self.forged: Counter[str] = Counter()
        self.history: list[tuple[int, int, str | None]] = []  # (unit, fc, kind), for messages
        self.passed = 0
        self.patience_s = patience_s
        self.pipelined = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        requests: asyncio.Queue[bytes] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        unanswered: list[float] = []  # arrival times of requests not answered yet

        async def read_requests() -> None:
            # A separate reader sees a pipelined second request the moment it is sent.
            while True:
                header = await client_r.readexactly(7)
                (length,) = struct.unpack(">H", header[4:6])
                frame = header + await client_r.readexactly(length - 1)
                now = loop.time()
                if any(now - t < self.patience_s for t in unanswered):
                    self.pipelined += 1
                unanswered.append(now)
                requests.put_nowait(frame)

        server_w: asyncio.StreamWriter | None = None
        reader_task = asyncio.ensure_future(read_requests())
        try:
            server_r, server_w = await asyncio.open_connection(LOOPBACK, self.target_port)
            while True:
                get = asyncio.ensure_future(requests.get())
                done, _ = await asyncio.wait({get, reader_task}, return_when="FIRST_COMPLETED")
                if get not in done:
                    get.cancel()
                    return
                request = get.result()
                tid, _pid, _length, unit = struct.unpack(">HHHB", request[:7])
                server_w.write(request)
                await server_w.drain()
                header = await server_r.readexactly(7)
                (length,) = struct.unpack(">H", header[4:6])
                reply = header + await server_r.readexactly(length - 1)
                kind = self.choose(unit, request[7])
                self.history.append((unit, request[7], kind))
                if kind is None:
                    self.passed += 1
                    out = reply
                else:
                    self.forged[kind] += 1
                    out = forge(kind, self.rng, tid, unit, reply[7:])
                unanswered.pop(0)
                client_w.write(out)
                await client_w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            reader_task.cancel()
            await asyncio.gather(reader_task, return_exceptions=True)
            if server_w is not None:
                server_w.close()
            client_w.close()
