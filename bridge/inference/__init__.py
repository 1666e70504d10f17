"""ONNX inference: load a model once per version, check it against a mapping, run batches off
the event loop. Imports onnxruntime and numpy only."""

from bridge.inference.model import (
    BatchResult,
    LoadedModel,
    ModelIO,
    OutputRoles,
    TensorSpec,
    file_sha256,
)

__all__ = ["BatchResult", "LoadedModel", "ModelIO", "OutputRoles", "TensorSpec", "file_sha256"]
