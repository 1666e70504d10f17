"""MES receiver simulator: records the gateway's POSTs and fails on demand."""

from __future__ import annotations

from .server import MesReceiver, ReceivedCall, serve_forever

__all__ = ["MesReceiver", "ReceivedCall", "serve_forever"]
