"""structlog set-up: JSON lines when not on a terminal (for log shippers), readable otherwise.

Library loggers (asyncua, pymodbus, uvicorn) go through the same renderer, at WARNING unless
asked otherwise: asyncua alone logs several lines per second at INFO.

Every rendered line passes ``redact_urls`` last: a URL anywhere in a value (a library's error
message, a traceback) loses its userinfo and secret-looking query values.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

from bridge.redact import redact_text

__all__ = ["add_logger_name", "configure_logging", "redact_urls", "to_stdlib"]


def redact_urls(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: credentials in URLs never reach a log line."""
    for key, value in event_dict.items():
        if isinstance(value, str) and "://" in value:
            event_dict[key] = redact_text(value)
    return event_dict


def add_logger_name(logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog's ``add_logger_name``, for any logger: see ``to_stdlib``."""
    name = getattr(logger, "name", None)
    if name is not None:
        event_dict["logger"] = name
    return event_dict


def to_stdlib(logger: WrappedLogger, method: str, event_dict: EventDict) -> Any:
    """The last processor: hands the event to the stdlib handler that renders it.

    A logger bound before ``configure_logging`` ran (a part built before the CLI configured
    logging in the same process) wraps structlog's default ``PrintLogger``, yet runs these
    processors, because they are changed in place. ``wrap_for_formatter``'s answer is for a
    stdlib logger only: given to a ``PrintLogger`` it raised inside the caller (a connector's
    ``close()`` failed on its "stopped" line). Such an event goes to the stdlib logger its
    ``logger`` key names (``bridge`` without one), and the wrapped logger gets nothing.
    """
    if isinstance(logger, logging.Logger):
        return structlog.stdlib.ProcessorFormatter.wrap_for_formatter(logger, method, event_dict)
    target = logging.getLogger(str(event_dict.get("logger") or "bridge"))
    level = _LEVELS.get(method, logging.INFO)
    if target.isEnabledFor(level):
        target.log(level, event_dict, extra={"_logger": target, "_name": method})
    raise structlog.DropEvent


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    as_json = not sys.stderr.isatty() if json is None else json
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        add_logger_name,
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
        to_stdlib,
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
