"""``python -m bridge.simulators.mes --port 8081 --log mes-calls.jsonl [--delay-ms 5]
[--fail-every 3]``"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from .server import serve_forever


async def _run(
    host: str,
    port: int,
    log_path: Path | None,
    delay_s: float = 0.0,
    fail_every: int = 0,
    fail_status: int = 500,
) -> None:
    # Ctrl-C and SIGTERM (docker stop, systemd) both end in a clean stop of the receiver.
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main is not None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # not on Windows
                loop.add_signal_handler(sig, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await serve_forever(host, port, log_path, delay_s, fail_every, fail_status)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bridge.simulators.mes", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8081, help="TCP port (0 = any free port)")
    parser.add_argument("--log", type=Path, default=None, help="append each recorded call here")
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0.0,
        help="answer each event request this long after it arrived (a slower MES)",
    )
    parser.add_argument(
        "--fail-every",
        type=int,
        default=0,
        metavar="N",
        help="answer every N-th event request with --fail-status (a flaky MES; 0: never)",
    )
    parser.add_argument("--fail-status", type=int, default=500, help="status of those answers")
    args = parser.parse_args(argv)
    if args.delay_ms < 0 or args.fail_every < 0 or not 400 <= args.fail_status <= 599:
        parser.error("--delay-ms and --fail-every are >= 0, --fail-status is 400..599")
    asyncio.run(
        _run(
            args.host,
            args.port,
            args.log,
            args.delay_ms / 1000,
            args.fail_every,
            args.fail_status,
        )
    )


if __name__ == "__main__":
    main()
