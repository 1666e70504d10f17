"""`bridge demo`: the simulated plant, PLC and MES plus the gateway, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import click

from bridge.auth import Scope
from bridge.prepare import prepare
from bridge.private_files import replace_private
from bridge.runtime.pipeline import Gateway, build_gateway
from bridge.simulators.demo_ports import DemoError, DemoPorts, busy_message
from bridge.simulators.mes.server import MesReceiver
from bridge.simulators.plant.server import PlantSimulator
from bridge.simulators.plc.server import PlcSimulator
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.db import open_store

__all__ = ["DEFAULT_MAPPING", "DemoError", "DemoPorts", "demo_api_key", "run_demo"]

# Package data, so an installed wheel has it too: in a source tree these are links to
# mappings/demo.yaml and mappings/models/pump_health.onnx (one copy to edit).
DEFAULT_MAPPING = Path(str(files("bridge.simulators") / "demo_data" / "demo.yaml"))
STATUS_EVERY_S = 5.0
PUMPS = 8
FAULTY_PUMP = 3
DEFAULT_PORTS = DemoPorts()


async def run_demo(
    mapping: Path | None,
    duration: float | None,
    ports: DemoPorts = DEFAULT_PORTS,
    workdir: Path = Path("var/demo"),
    stop: asyncio.Event | None = None,
    on_started: asyncio.Queue[tuple[Gateway, MesReceiver]] | None = None,
) -> None:
    """Run until ``duration`` passes, ``stop`` is set, or SIGINT/SIGTERM (when ``stop`` is None)."""
    ports.check_free()
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    prepared = await asyncio.to_thread(prepare, mapping or DEFAULT_MAPPING, ports.env(workdir))
    api_key = await asyncio.to_thread(demo_api_key, prepared.mapping.gateway.store, workdir)
    mes_log = workdir / "mes-calls.jsonl"
    plant = PlantSimulator(port=ports.plant, pumps=PUMPS, faulty=(FAULTY_PUMP,))
    plc = PlcSimulator(port=ports.plc)
    mes = MesReceiver(port=ports.mes, log_path=mes_log)
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)

    async with contextlib.AsyncExitStack() as stack:
        for name, sim in (("mes", mes), ("plc", plc), ("plant", plant)):
            # Taken between the check and now (another program was quicker).
            with _naming_busy_port((name, getattr(ports, name))):
                await sim.start()
            stack.push_async_callback(sim.stop)
        gateway = await build_gateway(prepared)
        gateway_task = asyncio.create_task(gateway.run(stop), name="gateway")
        getter = asyncio.create_task(gateway.started.wait())
        await asyncio.wait({gateway_task, getter}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            with _naming_busy_port(("api", ports.api), ("hmi", ports.hmi)):
                await gateway_task  # raises what went wrong at start-up
            return
        _banner(ports, mes_log, api_key)
        if on_started is not None:
            on_started.put_nowait((gateway, mes))
        status = asyncio.create_task(_status(gateway, stop))
        try:
            await gateway_task
        finally:
            status.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await status
    click.echo(
        f"demo stopped; MES receiver got {len(mes.calls)} calls "
        f"({mes.duplicate_count} duplicate keys), log in {mes_log}",
        err=True,
    )


@contextlib.contextmanager
def _naming_busy_port(*candidates: tuple[str, int]) -> Iterator[None]:
    """A bind error (bare, or as the cause of a connector's error) of one of ``candidates``
    becomes the busy-port message; the port the error text names tells which one it was."""
    try:
        yield
    except Exception as exc:
        text = _address_in_use(exc)
        if text is None:
            raise
        name, port = next(
            ((n, p) for n, p in candidates if f"{p})" in text or f":{p}" in text), candidates[0]
        )
        raise DemoError(busy_message(name, port)) from exc


def _address_in_use(exc: BaseException | None) -> str | None:
    """The text of the EADDRINUSE error in ``exc``'s chain of causes, if there is one."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.EADDRINUSE:
            return f"{exc} {seen}"
        seen = seen.__cause__
    return None


def demo_api_key(store_url: str, workdir: Path) -> str:
    """The demo's read-only API key, kept in ``workdir/api-key`` and reused while it is valid.

    The store keeps only hashes, so the file is the one place the key can be read again.
    """
    key_file = workdir / "api-key"
    store = open_store(store_url)
    try:
        keys = ApiKeyRepository(store)
        if key_file.exists():
            key = key_file.read_text(encoding="utf-8").strip()
            if keys.authenticate(key) is not None:
                return key
        _, key = keys.create("demo", Scope.READ)
    finally:
        store.dispose()
    # A new 0600 file moved into place: never readable by others, even for a moment.
    replace_private(key_file, key + "\n")
    return key


def _banner(ports: DemoPorts, mes_log: Path, api_key: str) -> None:
    api = f"http://127.0.0.1:{ports.api}"
    click.echo(
        "\nbridge demo is running (Ctrl+C to stop)\n"
        f"  Console        {api}/console/   (log in with the API key below)\n"
        f"  REST API       {api}/docs   e.g. {api}/api/v1/predictions/latest\n"
        f"  API key (read) {api_key}   (also in {mes_log.parent / 'api-key'}; "
        "send it as `Authorization: Bearer <key>`)\n"
        f"  OPC UA (HMI)   opc.tcp://127.0.0.1:{ports.hmi}   "
        "Objects/Predictions/<asset>/<model>/Value\n"
        f"  Plant (sim)    opc.tcp://127.0.0.1:{ports.plant}   {PUMPS} pumps, "
        f"pump-{FAULTY_PUMP:02d} develops a bearing fault\n"
        f"  PLC (sim)      modbus tcp 127.0.0.1:{ports.plc}\n"
        f"  MES receiver   http://127.0.0.1:{ports.mes}/calls   log: {mes_log}\n",
        err=True,
    )


async def _status(gateway: Gateway, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(STATUS_EVERY_S)
        latest = sorted(gateway.fanout.latest.values(), key=lambda p: (p.model, p.asset))
        cells = [
            f"{p.asset}={p.value if p.value is not None else '-'}"
            + (f"({p.score:.2f})" if p.score is not None else "")
            + ("" if p.quality.name == "GOOD" else f"[{p.quality.label}]")
            for p in latest
        ]
        click.echo(
            f"predictions: {' '.join(cells)}  | tag updates: {gateway.table.updates}", err=True
        )
