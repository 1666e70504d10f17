"""The ``Models`` folder of the gateway's OPC UA server: which versions serve, and how a
candidate agrees with the active version per asset.

    Objects/Models/<model>/{ActiveVersion, ActiveSha256, CandidateVersion, CandidateSha256,
                            CandidateMode, CanaryShare}
    Objects/Models/<model>/Agreement/<asset>       (Double, agreed/compared; Bad until compared)
    Objects/Models/<model>/Accuracy/<asset>/{Active, Candidate}
                                                   (Double, share right among the predictions
                                                    operators confirmed/rejected; Bad until one)
    nsu=<namespace>;s=Models.<model>.ActiveVersion

Fed with plain ``bridge.types.ModelStatus`` values; read-only like every other node.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.status_codes import StatusCodes

from bridge.connectors.opcua.encode import make_status
from bridge.types import ModelStatus, PredictionSlot

__all__ = ["STATUS_FIELDS", "ModelsFolder"]

STATUS_FIELDS: dict[str, ua.VariantType] = {
    "ActiveVersion": ua.VariantType.String,
    "ActiveSha256": ua.VariantType.String,
    "CandidateVersion": ua.VariantType.String,
    "CandidateSha256": ua.VariantType.String,
    "CandidateMode": ua.VariantType.String,
    "CanaryShare": ua.VariantType.Double,
}


def _fields(s: ModelStatus) -> dict[str, object]:
    return {
        "ActiveVersion": s.active_version,
        "ActiveSha256": s.active_sha256,
        "CandidateVersion": s.candidate_version,
        "CandidateSha256": s.candidate_sha256,
        "CandidateMode": s.candidate_mode,
        "CanaryShare": float(s.canary_share) if s.canary_share is not None else 0.0,
    }


class ModelsFolder:
    def __init__(self, nid: Callable[[str], ua.NodeId], ns: int) -> None:
        self._nid = nid
        self._ns = ns
        self._nodes: dict[tuple[str, str], ua.NodeId] = {}
        self._last: dict[tuple[str, str], object] = {}
        self._assets: dict[str, set[str]] = {}  # model -> assets with nodes

    async def build(self, server: Server, slots: Sequence[PredictionSlot]) -> None:
        await server.nodes.objects.add_folder(self._nid("Models"), f"{self._ns}:Models")
        await self.follow(server, slots)

    async def follow(self, server: Server, slots: Sequence[PredictionSlot]) -> None:
        """Nodes for the models and assets of ``slots``, built at start and changed by a
        mapping reload: a new model or asset gets its nodes, a model or asset gone loses
        them, the others keep theirs (and their values)."""
        by_model: dict[str, list[PredictionSlot]] = {}
        for slot in slots:
            by_model.setdefault(slot.model, []).append(slot)
        for model in sorted(set(self._assets) - set(by_model)):
            await self._delete(server, f"Models.{model}")
            self._forget(model, None)
            del self._assets[model]
        for model, its in sorted(by_model.items()):
            if model not in self._assets:
                await self._add_model(server, model, its[0])
                self._assets[model] = set()
            have = self._assets[model]
            for asset in sorted(have - {s.asset for s in its}):
                await self._delete(server, f"Models.{model}.Agreement.{asset}")
                await self._delete(server, f"Models.{model}.Accuracy.{asset}")
                self._forget(model, asset)
                have.discard(asset)
            for slot in sorted(its, key=lambda s: s.asset):
                if slot.asset not in have:
                    await self._add_asset(server, model, slot.asset)
                    have.add(slot.asset)

    async def _add_model(self, server: Server, model: str, first: PredictionSlot) -> None:
        ns = self._ns
        root = server.get_node(self._nid("Models"))
        node = await root.add_object(self._nid(f"Models.{model}"), f"{ns}:{model}")
        initial = ModelStatus(model, first.version, first.sha256)
        for field, vtype in STATUS_FIELDS.items():
            nodeid = self._nid(f"Models.{model}.{field}")
            value = _fields(initial)[field]
            await node.add_variable(nodeid, f"{ns}:{field}", value, vtype)
            self._nodes[(model, field)] = nodeid
            self._last[(model, field)] = value
        await node.add_folder(self._nid(f"Models.{model}.Agreement"), f"{ns}:Agreement")
        await node.add_folder(self._nid(f"Models.{model}.Accuracy"), f"{ns}:Accuracy")

    async def _add_asset(self, server: Server, model: str, asset: str) -> None:
        ns = self._ns
        folder = server.get_node(self._nid(f"Models.{model}.Agreement"))
        nodeid = self._nid(f"Models.{model}.Agreement.{asset}")
        await folder.add_variable(nodeid, f"{ns}:{asset}", 0.0, ua.VariantType.Double)
        await server.write_attribute_value(nodeid, _dv(None))
        self._nodes[(model, f"Agreement.{asset}")] = nodeid
        accuracy = server.get_node(self._nid(f"Models.{model}.Accuracy"))
        per = await accuracy.add_object(
            self._nid(f"Models.{model}.Accuracy.{asset}"), f"{ns}:{asset}"
        )
        for side in _SIDES:
            field = f"Accuracy.{asset}.{side}"
            nodeid = self._nid(f"Models.{model}.{field}")
            await per.add_variable(nodeid, f"{ns}:{side}", 0.0, ua.VariantType.Double)
            await server.write_attribute_value(nodeid, _dv(None))
            self._nodes[(model, field)] = nodeid

    async def _delete(self, server: Server, identifier: str) -> None:
        with warnings.catch_warnings():  # asyncua's unawaited callback (server._delete)
            warnings.filterwarnings(
                "ignore", message=r"coroutine '.*datachange_callback' was never awaited"
            )
            await server.delete_nodes([server.get_node(self._nid(identifier))], recursive=True)

    def _forget(self, model: str, asset: str | None) -> None:
        """Drop the node ids of a model (``asset`` None) or of one of its assets."""

        def gone(field: str) -> bool:
            if asset is None:
                return True
            return field == f"Agreement.{asset}" or field.startswith(f"Accuracy.{asset}.")

        for key in [k for k in self._nodes if k[0] == model and gone(k[1])]:
            del self._nodes[key]
            self._last.pop(key, None)

    def changes(self, statuses: Sequence[ModelStatus]) -> list[tuple[ua.NodeId, ua.DataValue]]:
        """The (node, value) pairs that changed since the last call, for one batch write
        (``bridge.connectors.opcua._batch``)."""
        out: list[tuple[ua.NodeId, ua.DataValue]] = []
        for status in statuses:
            values: dict[str, object] = dict(_fields(status))
            for asset, rate in status.agreement:
                values[f"Agreement.{asset}"] = rate
            judged = {asset: (a, c) for asset, a, c in status.accuracy}
            for asset, _ in status.agreement:
                # No candidate (or no label yet): nothing judged, the nodes go back to Bad.
                active, candidate = judged.get(asset, (None, None))
                values[f"Accuracy.{asset}.Active"] = active
                values[f"Accuracy.{asset}.Candidate"] = candidate
            for field, value in values.items():
                key = (status.model, field)
                nodeid = self._nodes.get(key)
                if nodeid is None or self._last.get(key, object()) == value:
                    continue
                self._last[key] = value
                if field.startswith(("Agreement.", "Accuracy.")):
                    dv = _dv(value if isinstance(value, float) else None)
                else:
                    now: Any = datetime.now(UTC)
                    dv = ua.DataValue(ua.Variant(value, STATUS_FIELDS[field]), SourceTimestamp=now)
                out.append((nodeid, dv))
        return out


_SIDES = ("Active", "Candidate")


def _dv(rate: float | None) -> ua.DataValue:
    now: Any = datetime.now(UTC)
    if rate is None:  # nothing compared (or judged) yet: there is no rate to show
        return ua.DataValue(
            ua.Variant(0.0, ua.VariantType.Double),
            StatusCode=make_status(StatusCodes.BadWaitingForInitialData),
            SourceTimestamp=now,
        )
    return ua.DataValue(ua.Variant(rate, ua.VariantType.Double), SourceTimestamp=now)
