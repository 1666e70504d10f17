"""A fleet of gateway processes on one machine, for trying a fleet out and for its tests and
benchmark: one mapping (the plant simulator's pumps, the bundled pump-health model, an HMI
server and an MES destination) run by N ``bridge run`` processes on one PostgreSQL store, each
with its own id and ports from its environment.

Each process's output goes to a file (a pipe nobody reads would block its logging). ``kill``
is ``kill -9``: no goodbye, the leases run out on their own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FLEET_MAPPING", "GatewayProcess", "fleet_mapping", "pump_ids"]

FLEET_MAPPING = """\
version: 1
gateway:
  id: ${{BRIDGE_GATEWAY_ID}}
  store: "{store}"
  api: {{host: 127.0.0.1, port: "${{BRIDGE_API_PORT}}"}}
  fleet: {{enabled: true, heartbeat_s: {heartbeat_s}, lease_s: {lease_s}, mirror_s: {mirror_s}}}
  # MES events a killed gateway had claimed are sent by another once this lease ends.
  outbox: {{lease_s: {outbox_lease_s}}}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{plant}", publishing_interval_ms: 100}}
templates:
  pump:
    tags:
      vibration: {{source: plant, address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.Vibration"}}
      bearing_temperature:
        source: plant
        address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.BearingTemperature"
      discharge_pressure:
        source: plant
        address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.DischargePressure"
      speed: {{source: plant, address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.Speed"}}
assets:
{assets}
models:
  pump-health:
    file: {model}
    version: "1"
    template: pump
    period_s: {period_s}
    window_s: {window_s}
    min_window_s: {min_window_s}
    features:
      - {{tag: vibration, stat: mean}}
      - {{tag: vibration, stat: std}}
      - {{tag: vibration, stat: max}}
      - {{tag: bearing_temperature, stat: mean}}
      - {{tag: bearing_temperature, stat: slope}}
      - {{tag: discharge_pressure, stat: mean}}
      - {{tag: speed, stat: mean}}
outputs:
  hmi:
    kind: opcua-server
    endpoint: "opc.tcp://127.0.0.1:${{BRIDGE_HMI_PORT}}"
    namespace: urn:bridge:predictions
    allow_anonymous: true
    security_policies: ["None"]
  mes: {{kind: mes-rest, url: "http://127.0.0.1:{mes}/api/v1/predictions"}}
"""


def pump_ids(pumps: int) -> list[str]:
    return [f"pump-{i:02d}" for i in range(1, pumps + 1)]


def fleet_mapping(
    path: Path,
    *,
    store: str,
    plant: int,
    mes: int,
    model: Path,
    pumps: int,
    period_s: float = 1.0,
    window_s: float = 3.0,
    min_window_s: float = 1.0,
    heartbeat_s: float = 1.0,
    lease_s: float = 5.0,
    mirror_s: float = 1.0,
    outbox_lease_s: float = 5.0,
) -> Path:
    """Write the fleet's mapping to ``path`` (the plant simulator's pumps 01..``pumps``)."""
    assets = "\n".join(
        f'  pump-{i:02d}: {{template: pump, vars: {{n: "{i:02d}"}}}}' for i in range(1, pumps + 1)
    )
    path.write_text(
        FLEET_MAPPING.format(
            store=store,
            plant=plant,
            mes=mes,
            model=model,
            assets=assets,
            period_s=period_s,
            window_s=window_s,
            min_window_s=min_window_s,
            heartbeat_s=heartbeat_s,
            lease_s=lease_s,
            mirror_s=mirror_s,
            outbox_lease_s=outbox_lease_s,
        )
    )
    return path


@dataclass
class GatewayProcess:
    """One ``bridge run`` of the fleet's mapping, as gateway ``gateway_id``."""

    gateway_id: str
    mapping: Path
    log: Path
    api_port: int
    hmi_port: int
    proc: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def hmi_endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.hmi_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "BRIDGE_GATEWAY_ID": self.gateway_id,
            "BRIDGE_API_PORT": str(self.api_port),
            "BRIDGE_HMI_PORT": str(self.hmi_port),
        }
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bridge",
                "run",
                str(self.mapping),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )

    async def kill(self) -> None:
        """``kill -9``: the process ends at once, its leases are left to run out."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (the gateway leaves the fleet on its way down), SIGKILL if it hangs."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
