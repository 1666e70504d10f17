"""The body of a drift event (MES alert and retraining webhook) and its id. Pure."""

from __future__ import annotations

import json
import uuid
from typing import Any

from .monitor import DriftCrossing

__all__ = ["DRIFT_LABEL", "drift_details", "drift_event", "drift_event_id", "dumps"]

DRIFT_LABEL = "drift"
# uuid5 namespace of drift events: the id is the Idempotency-Key of the MES and webhook calls.
_DRIFT_NS = uuid.UUID("2f0c7c8e-52a4-5f7e-9b0e-4d0c3a1e6b57")


def drift_event_id(gateway: str, model: str, asset: str, at: float) -> str:
    return str(uuid.uuid5(_DRIFT_NS, f"{gateway}/{model}/{asset}/{at!r}"))


def drift_details(c: DriftCrossing) -> dict[str, Any]:
    """What a drift event says beyond whose it is: also the ``drift`` of its MES trigger."""
    return {
        "score": c.score,
        "threshold": c.threshold,
        "drifting_features": list(c.drifting),
        "window": {
            "rows": c.window,
            "features": {
                s.feature: {
                    "psi": s.psi,
                    "mean": s.mean,
                    "std": s.std,
                    "min": s.min,
                    "max": s.max,
                    "reference_mean": s.reference_mean,
                    "reference_std": s.reference_std,
                }
                for s in c.features
            },
        },
        "raised_at": c.at,
    }


def drift_event(
    gateway: str, model: str, version: str, sha256: str, c: DriftCrossing
) -> dict[str, Any]:
    """The default body (webhook, alert detail, destinations without event rules)."""
    return {
        "event": "drift",
        "gateway": gateway,
        "asset": c.asset,
        "model": model,
        "version": version,
        "sha256": sha256,
        **drift_details(c),
    }


def dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), allow_nan=False)
