"""Explanations: which inputs moved a prediction (occlusion against the reference mean, one
batched onnxruntime call) and one line in plain words for operators."""

from .occlusion import occlusion_effects
from .reason import describe

__all__ = ["describe", "occlusion_effects"]
