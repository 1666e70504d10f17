"""The demo's ports: defaults, the BRIDGE_DEMO_* variables the demo mapping reads, and a clear
error when one is taken. Light on purpose: `bridge demo --help` imports it."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from bridge.errors import BridgeError

__all__ = ["DemoError", "DemoPorts", "busy_message"]


class DemoError(BridgeError):
    """The demo cannot start as asked (a port it needs is taken, ...)."""


# What listens on each port, for the busy-port message.
_ROLES = {
    "plant": "the simulated plant (OPC UA)",
    "plc": "the simulated PLC (Modbus TCP)",
    "mes": "the MES receiver (HTTP)",
    "api": "the gateway's REST API",
    "hmi": "the gateway's OPC UA server",
}


@dataclass(frozen=True)
class DemoPorts:
    """The demo's ports; the demo mapping reads them from BRIDGE_DEMO_* variables."""

    plant: int = 4840
    plc: int = 5020
    mes: int = 8081
    api: int = 8000
    hmi: int = 4850

    def env(self, workdir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (the process environment by default) with the ports the simulators really
        listen on; BRIDGE_DEMO_STORE (and BRIDGE_DEMO_AUDIT_KEY) are kept when set, else the
        store (and the audit ledger's key) are in ``workdir``."""
        env = dict(os.environ if base is None else base)
        env.update({_variable(name): str(port) for name, port in self.items()})
        env.setdefault("BRIDGE_DEMO_STORE", f"sqlite:///{workdir.resolve() / 'bridge.db'}")
        env.setdefault("BRIDGE_DEMO_AUDIT_KEY", str(workdir.resolve() / "audit-ed25519.pem"))
        return env

    def items(self) -> list[tuple[str, int]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]

    def check_free(self, host: str = "127.0.0.1") -> None:
        """Raise ``DemoError`` naming the first port something else listens on and the option
        that moves it, before anything starts (a bind error half-way leaves a confusing log)."""
        for name, port in self.items():
            if not _bindable(host, port):
                raise DemoError(busy_message(name, port))


def busy_message(name: str, port: int) -> str:
    option = f"--{name}-port"
    return (
        f"port {port} on 127.0.0.1 ({_ROLES[name]}) is in use: stop what listens there, or "
        f"move the demo with {option} PORT (or {_variable(name)}) or --port-offset N"
    )


def _variable(name: str) -> str:
    return f"BRIDGE_DEMO_{name.upper()}_PORT"


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers bind: a port whose last connection is in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True
