"""Credentials in URLs never reach a log line: the pure redaction, and the logging pipeline that
applies it to every rendered line (structlog events and library loggers alike)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from bridge.logging import configure_logging
from bridge.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://gw:pa55@mes.local:8443/api?x=1", "https://***@mes.local:8443/api?x=1"),
        ("https://token-only@mes.local/", "https://***@mes.local/"),
        (
            "https://h/hook?token=abc&site=7&api_key=k&X-Amz-Signature=s&Password=p",
            "https://h/hook?token=***&site=7&api_key=***&X-Amz-Signature=***&Password=***",
        ),
        ("http://[::1]:80/x?code=123#frag", "http://[::1]:80/x?code=***#frag"),
        ("http://mes.local/api/v1/events", "http://mes.local/api/v1/events"),
        ("https://h/p?flag&empty=", "https://h/p?flag&empty="),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_keeps_the_prose_around_urls() -> None:
    text = "POST https://gw:pw@mes/e?token=t1: refused (see https://a:b@h/x)."
    assert redact_text(text) == "POST https://***@mes/e?token=***: refused (see https://***@h/x)."
    assert redact_text("no url here: a:b@c") == "no url here: a:b@c"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)


@pytest.mark.usefixtures("restore_logging")
def test_log_lines_carry_no_url_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", json=True)
    structlog.get_logger("bridge.test").info(
        "sink_started", url="https://gw:s3cr3t-pw@mes.local/e?token=t0k3n-v4l"
    )
    # A library logger (httpx, asyncua, ...) quoting a URL in its message.
    logging.getLogger("some.library").warning(
        "giving up on https://gw:s3cr3t-pw@mes.local/e?token=t0k3n-v4l after 3 tries"
    )
    try:
        raise ConnectionError("cannot reach https://gw:s3cr3t-pw@mes.local/")
    except ConnectionError:
        structlog.get_logger("bridge.test").exception("send_failed")
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert [line["event"] for line in lines][:3] == [
        "sink_started",
        lines[1]["event"],
        "send_failed",
    ]
    assert lines[0]["url"] == "https://***@mes.local/e?token=***"
    assert "giving up on https://***@mes.local/e?token=*** after 3 tries" in lines[1]["event"]
    assert "s3cr3t-pw" not in err and "t0k3n-v4l" not in err


@pytest.mark.usefixtures("restore_logging")
def test_a_logger_bound_before_configuration_still_logs(capsys: pytest.CaptureFixture[str]) -> None:
    """A part built before the CLI configured logging in the same process (the gateway in a
    test, then an in-process CLI call) holds a logger bound to structlog's default
    PrintLogger; after configure_logging its lines reach the handler, and logging never raises
    into the caller (a connector's close() once failed on its last log line)."""
    structlog.reset_defaults()
    early = structlog.get_logger("bridge.early").bind(part="hmi")
    early.info("bound_before")  # structlog's default output, before configuration
    capsys.readouterr()
    configure_logging("info", json=True)
    early.info("server_stopped", url="https://gw:s3cr3t@mes.local/")
    early.debug("below_the_level")
    try:
        raise ConnectionError("gone")
    except ConnectionError:
        early.exception("close_failed")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert [x["event"] for x in lines] == ["server_stopped", "close_failed"]
    assert lines[0]["part"] == "hmi" and lines[0]["level"] == "info"
    assert lines[0]["url"] == "https://***@mes.local/"
    assert lines[1]["level"] == "error" and "ConnectionError: gone" in lines[1]["exception"]


def test_an_empty_authority_keeps_its_slashes() -> None:
    # urlunsplit alone turns sqlite:///x.db into sqlite:/x.db: another URL.
    assert redact_url("sqlite:///var/x.db") == "sqlite:///var/x.db"
    assert redact_url("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert redact_url("file:///x?token=t") == "file:///x?token=***"
