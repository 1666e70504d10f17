"""``python -m simulators.mes --port 8081 --log mes-calls.jsonl``"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from .server import serve_forever


async def _run(host: str, port: int, log_path: Path | None) -> None:
    # Ctrl-C and SIGTERM (docker stop, systemd) both end in a clean stop of the receiver.
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main is not None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # not on Windows
                loop.add_signal_handler(sig, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await serve_forever(host, port, log_path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.mes", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8081, help="TCP port (0 = any free port)")
    parser.add_argument("--log", type=Path, default=None, help="append each recorded call here")
    args = parser.parse_args(argv)
    asyncio.run(_run(args.host, args.port, args.log))


if __name__ == "__main__":
    main()
