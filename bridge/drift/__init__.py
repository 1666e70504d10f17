"""Drift detection: per feature PSI of an asset's recent Good feature rows against the model's
reference statistics (format ``bridge-reference/1``, see ``bridge.config.reference``), an
alert and a retraining webhook call once per threshold crossing."""

from .monitor import DriftCrossing, DriftMonitor, FeatureWindowStats
from .psi import psi_rows

__all__ = ["DriftCrossing", "DriftMonitor", "FeatureWindowStats", "psi_rows"]
