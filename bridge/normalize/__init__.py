"""Pure per-tag transforms compiled once from the mapping: scaling, clamp, deadband, finiteness."""

from bridge.normalize.transform import Transform, compile_transform, passes_deadband

__all__ = ["Transform", "compile_transform", "passes_deadband"]
