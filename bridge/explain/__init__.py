"""Explanations: which inputs moved a prediction (occlusion against the reference mean, one
batched onnxruntime call) and one line in plain words for operators."""

from .explainer import Explainer, baseline_of
from .occlusion import occlusion_effects
from .reason import describe

__all__ = ["Explainer", "baseline_of", "describe", "occlusion_effects"]
