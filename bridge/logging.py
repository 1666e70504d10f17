"""structlog set-up: JSON lines when not on a terminal (for log shippers), readable otherwise.

Library loggers (asyncua, pymodbus, uvicorn) go through the same renderer, at WARNING unless
asked otherwise: asyncua alone logs several lines per second at INFO.

Every rendered line passes ``redact_urls`` last: a URL anywhere in a value (a library's error
message, a traceback) loses its userinfo and secret-looking query values.
"""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import EventDict, WrappedLogger

from bridge.redact import redact_text

__all__ = ["configure_logging", "redact_urls"]


def redact_urls(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: credentials in URLs never reach a log line."""
    for key, value in event_dict.items():
        if isinstance(value, str) and "://" in value:
            event_dict[key] = redact_text(value)
    return event_dict


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    as_json = not sys.stderr.isatty() if json is None else json
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    # Loggers cached on first use keep the processor list they were built with: replacing the
    # list's contents (not the list) lets a second configuration (the CLI run in-process, a
    # test's capture_logs) reach every logger, whichever configuration built it.
    processors: list[structlog.types.Processor] = structlog.get_config()["processors"]
    processors[:] = [
        *shared,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ]
    structlog.configure(
        processors=processors,
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact_urls,
                renderer,
            ],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("asyncua", "pymodbus", "uvicorn", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
