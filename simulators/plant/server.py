"""An OPC UA server that serves ``physics.PumpState`` pumps: ``Objects/Plant/PumpNN/<signal>``.

The plant namespace deliberately sits at a non-first index (a dummy namespace is registered
before it), so client code that hard-codes a namespace index breaks here as it would on a
real server, instead of passing by luck.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from asyncua import ua
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager

from bridge.simulators.plant.physics import SIGNALS, FaultPlan, PumpState
from bridge.simulators.service import Service

__all__ = ["OTHER_NAMESPACE", "PLANT_NAMESPACE", "PlantSimulator", "serve_forever"]

PLANT_NAMESPACE = "urn:bridge:sim:plant"
OTHER_NAMESPACE = "urn:bridge:sim:other"
UNITS_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"

log = structlog.get_logger(__name__)

_VARIANT = {"Double": ua.VariantType.Double, "Boolean": ua.VariantType.Boolean}


def pump_name(index: int) -> str:
    """1-based pump number -> ``Pump01``."""
    return f"Pump{index:02d}"


def node_string(pump: int, signal: str) -> str:
    """The string identifier of one signal, e.g. ``Pump01.Vibration``."""
    return f"{pump_name(pump)}.{signal}"


class _AnonymousReader(UserManager):
    """Everyone is an ordinary user: never the permissive default's remote ``admin``."""

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        return User(role=UserRole.User)


class PlantSimulator(Service):
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4840,
        pumps: int = 8,
        faulty: Sequence[int] = (3,),
        update_interval_s: float = 0.1,
        fault: FaultPlan = FaultPlan(),  # noqa: B008 - FaultPlan is frozen
        seed: int = 0,
    ) -> None:
        if pumps < 1:
            raise ValueError("pumps must be >= 1")
        if update_interval_s <= 0:
            raise ValueError("update_interval_s must be > 0")
        self.host = host
        self.port = port
        self.pumps = pumps
        self.faulty = tuple(faulty)
        self.update_interval_s = update_interval_s
        self.fault = fault
        self.seed = seed
        self.namespace_index: int | None = None
        self.updates = 0
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            return
        # A fresh Server per start: asyncua servers are not meant to be restarted in place.
        server = Server(user_manager=cast(Any, _AnonymousReader()))
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("bridge plant simulator")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_identity_tokens([ua.AnonymousIdentityToken])
        await server.register_namespace(OTHER_NAMESPACE)
        ns = await server.register_namespace(PLANT_NAMESPACE)
        self.namespace_index = ns
        slots = await self._build(server, ns)
        try:
            await server.start()
        except Exception:
            await server.stop()
            raise
        self._server = server
        states = [
            PumpState(index=i, seed=self.seed, fault=self.fault if i in self.faulty else None)
            for i in range(1, self.pumps + 1)
        ]
        self._task = asyncio.create_task(self._run(server, states, slots), name="plant-sim")
        log.info("plant_started", endpoint=self.endpoint, pumps=self.pumps, namespace_index=ns)

    async def _build(self, server: Server, ns: int) -> list[list[tuple[ua.NodeId, ua.VariantType]]]:
        plant = await server.nodes.objects.add_folder(_nid("Plant", ns), f"{ns}:Plant")
        slots: list[list[tuple[ua.NodeId, ua.VariantType]]] = []
        for pump in range(1, self.pumps + 1):
            obj = await plant.add_object(_nid(pump_name(pump), ns), f"{ns}:{pump_name(pump)}")
            row: list[tuple[ua.NodeId, ua.VariantType]] = []
            for signal, (unit, type_name) in SIGNALS.items():
                vtype = _VARIANT[type_name]
                initial: float | bool = False if vtype == ua.VariantType.Boolean else 0.0
                nodeid = _nid(node_string(pump, signal), ns)
                var = await obj.add_variable(nodeid, f"{ns}:{signal}", initial, vtype)
                if unit:
                    # The standard property name lives in namespace 0, as HMIs expect.
                    eu_id = _nid(f"{node_string(pump, signal)}.EngineeringUnits", ns)
                    eu_name = ua.QualifiedName("EngineeringUnits", 0)
                    await var.add_property(eu_id, eu_name, _eu(unit))
                row.append((nodeid, vtype))
            slots.append(row)
        return slots

    async def _run(
        self,
        server: Server,
        states: list[PumpState],
        slots: list[list[tuple[ua.NodeId, ua.VariantType]]],
    ) -> None:
        interval = self.update_interval_s
        started = time.monotonic()
        tick = 0
        try:
            while True:
                now_mono = time.monotonic()
                t = now_mono - started
                stamp: Any = datetime.now(UTC)  # asyncua annotates its own datetime subclass
                for state, row in zip(states, slots, strict=True):
                    values = state.step(t, interval).as_signals()
                    for (nodeid, vtype), value in zip(row, values.values(), strict=True):
                        dv = ua.DataValue(
                            ua.Variant(value, vtype),
                            SourceTimestamp=stamp,
                            ServerTimestamp=stamp,
                        )
                        await server.write_attribute_value(nodeid, dv)
                self.updates += 1
                tick += 1
                # Sleep to the next slot on a fixed grid so the rate does not drift under load.
                delay = started + tick * interval - time.monotonic()
                if delay < 0:
                    tick = int((time.monotonic() - started) / interval) + 1
                    delay = started + tick * interval - time.monotonic()
                await asyncio.sleep(max(0.0, delay))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("plant_update_failed")
            raise

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if server is not None:
            await server.stop()
            log.info("plant_stopped", endpoint=self.endpoint)


def _nid(identifier: str, ns: int) -> ua.NodeId:
    # asyncua annotates NodeId with its own str/int subclasses; plain values are what it expects.
    return ua.NodeId(cast(Any, identifier), cast(Any, ns))


def _eu(unit: str) -> ua.EUInformation:
    return ua.EUInformation(
        NamespaceUri=UNITS_NAMESPACE,
        UnitId=-1,
        DisplayName=ua.LocalizedText(unit),
        Description=ua.LocalizedText(unit),
    )


async def serve_forever(
    host: str = "127.0.0.1",
    port: int = 4840,
    pumps: int = 8,
    faulty: Sequence[int] = (3,),
    update_interval_s: float = 0.1,
    fault: FaultPlan = FaultPlan(),  # noqa: B008 - FaultPlan is frozen
    seed: int = 0,
) -> None:
    """Run the simulator until cancelled (Ctrl-C in the CLI)."""
    async with PlantSimulator(host, port, pumps, faulty, update_interval_s, fault, seed):
        await asyncio.Event().wait()
