"""Pure per-tag transforms compiled once from the mapping: scaling, unit conversion, clamp,
deadband, finiteness."""

from bridge.normalize.transform import (
    Transform,
    compile_transform,
    linear_of,
    passes_deadband,
    transform_key,
)

__all__ = ["Transform", "compile_transform", "linear_of", "passes_deadband", "transform_key"]
