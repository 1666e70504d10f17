"""The encoded body of ``GET /api/v1/predictions/latest``, built once per change of the latest
predictions instead of once per request.

The latest predictions change once per model period, while dashboards poll them far more often:
building 2,000 ``PredictionOut`` models and encoding ~1.6 MB of JSON per request made the route
serve ~10 % of what a bare FastAPI app serves (bench/README.md, "REST API"). ``Prediction`` is
frozen, so the set of latest predictions is unchanged exactly when the view returns the same
objects in the same order: that identity check is the cache key, and it needs nothing from the
view beyond what ``GatewayView`` already offers.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from pydantic import TypeAdapter

from bridge.types import Prediction

from .schemas import PredictionOut

__all__ = ["LatestBody", "encode_predictions"]

# The very serializer FastAPI uses for a route declared with ``response_model=list[...]``
# (``TypeAdapter.dump_json``, by alias): the cached bytes equal what the route returned before.
_ADAPTER: TypeAdapter[list[PredictionOut]] = TypeAdapter(list[PredictionOut])


def encode_predictions(predictions: Sequence[Prediction]) -> bytes:
    """JSON of ``predictions`` as the API shows them: sorted by (asset, model)."""
    ordered = sorted(predictions, key=lambda p: (p.asset, p.model))
    return _ADAPTER.dump_json([PredictionOut.of(p) for p in ordered], by_alias=True)


class LatestBody:
    """The last encoded body and the predictions it was built from (kept, so that identity
    comparison stays exact: objects that are alive cannot share an id with new ones)."""

    def __init__(self) -> None:
        self._source: list[Prediction] = []
        self._body: bytes | None = None
        self.builds = 0

    def get(self, predictions: Sequence[Prediction]) -> bytes:
        if self._body is None or not _same(predictions, self._source):
            self._body = encode_predictions(predictions)
            self._source = list(predictions)
            self.builds += 1
        return self._body


def _same(a: Sequence[Prediction], b: Sequence[Prediction]) -> bool:
    # map(operator.is_) runs the comparison in C: ~20 µs for 2,000 predictions.
    return len(a) == len(b) and all(map(operator.is_, a, b))
