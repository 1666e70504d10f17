"""The only place that reads mapping files and the environment. Typed models after it."""

from bridge.config.loader import load_mapping
from bridge.config.resolved import Endpoint, Feature, Mapping, ResolvedModel, ResolvedTag
from bridge.config.schema import mapping_schema

__all__ = [
    "Endpoint",
    "Feature",
    "Mapping",
    "ResolvedModel",
    "ResolvedTag",
    "load_mapping",
    "mapping_schema",
]
