"""The mapping most model tests need, written once: pumps with the four plant tags and one model,
``pump-health``, with the seven features of the bundled model (in its input order). Tests differ
only where they mean to: the gateway block, the assets, the model file, version and timing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["pump_mapping"]

_FEATURES = (
    ("vibration", "mean"),
    ("vibration", "std"),
    ("vibration", "max"),
    ("bearing_temperature", "mean"),
    ("bearing_temperature", "slope"),
    ("discharge_pressure", "mean"),
    ("speed", "mean"),
)
_TAGS = ("vibration", "bearing_temperature", "discharge_pressure", "speed")
_SHORT = {"vibration": "V", "bearing_temperature": "T", "discharge_pressure": "P", "speed": "S"}


def pump_mapping(
    *,
    store: str | Path,
    model: str | Path,
    assets: Sequence[str] = ("pump-a",),
    gateway_id: str = "unit",
    gateway: Sequence[str] = (),
    port: int = 4840,
    version: str = "1",
    timing: Mapping[str, float] | None = None,
) -> str:
    """YAML text of the mapping. ``gateway``: more lines of the gateway block (e.g.
    ``"api: {enabled: false}"``); ``timing``: the model's keys such as ``period_s`` and
    ``window_s`` (default 1 s and 10 s; ``{}`` for the mapping defaults). Nothing answers on
    ``port`` unless the test starts a plant there."""
    if timing is None:
        timing = {"period_s": 1, "window_s": 10}
    lines = [
        "version: 1",
        "gateway:",
        f"  id: {gateway_id}",
        f'  store: "sqlite:///{store}"',
        *(f"  {line}" for line in gateway),
        "sources:",
        f'  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{port}"}}',
        "templates:",
        "  pump:",
        "    tags:",
        *(
            f'      {tag}: {{source: plant, address: "nsu=urn:t;s={{n}}.{_SHORT[tag]}"}}'
            for tag in _TAGS
        ),
        "assets:",
        *(f"  {a}: {{template: pump, vars: {{n: {a.replace('-', '')}}}}}" for a in assets),
        "models:",
        "  pump-health:",
        f"    file: {model}",
        f'    version: "{version}"',
        "    template: pump",
        *(f"    {key}: {value:g}" for key, value in timing.items()),
        "    features:",
        *(f"      - {{tag: {tag}, stat: {stat}}}" for tag, stat in _FEATURES),
    ]
    return "\n".join(lines) + "\n"
