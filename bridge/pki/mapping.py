"""The trust lists a mapping uses: each ``opcua`` source's ``security.pki_dir`` (servers the
gateway connects to) and each ``opcua-server`` output's ``pki_dir`` (clients that connect to
it). The connectors' settings are read by attribute, as the core reads every connector block:
the core names no connector module."""

from __future__ import annotations

from pathlib import Path

from bridge.config.resolved import Mapping

from .trustlists import Side, TrustDir

__all__ = ["trust_dirs_of"]

_SOURCE_KINDS = ("opcua",)
_SERVER_KINDS = ("opcua-server",)


def trust_dirs_of(mapping: Mapping) -> list[TrustDir]:
    """One ``TrustDir`` per folder, naming the sources and outputs that use it. Relative folders
    stay relative: the gateway takes them from its working directory."""
    found: dict[Path, tuple[Side | None, list[str]]] = {}

    def add(path: object, side: Side, name: str) -> None:
        if not isinstance(path, str) or not path:
            return
        folder = Path(path)
        known_side, names = found.setdefault(folder, (side, []))
        names.append(name)
        if known_side != side:  # one folder for both sides: a mistake, shown as "no side"
            found[folder] = (None, names)

    for name, source in mapping.sources.items():
        if source.kind in _SOURCE_KINDS:
            security = getattr(source.settings, "security", None)
            add(getattr(security, "pki_dir", None), "servers", f"sources.{name}")
    for name, output in mapping.outputs.items():
        if output.kind in _SERVER_KINDS:
            add(getattr(output.settings, "pki_dir", None), "clients", f"outputs.{name}")
    return [TrustDir(path, side, tuple(names)) for path, (side, names) in found.items()]
