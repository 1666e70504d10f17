"""Does a model file fit its mapping entry: loaded with the roles the mapping gives its outputs,
then checked against the entry's input shape, feature count, outputs and labels.

Here, not in ``bridge.prepare``, because the registry (``bridge.lifecycle``) makes the same
checks of a version it loads while the gateway runs, and a domain package must not import the
start-up step above it.
"""

from __future__ import annotations

from bridge.config.resolved import ResolvedModel

from .model import LoadedModel, OutputRoles

__all__ = ["load_model_for", "model_problems"]


def load_model_for(model: ResolvedModel) -> LoadedModel:
    roles = OutputRoles(
        label=model.outputs.label, scores=model.outputs.scores, value=model.outputs.value
    )
    return LoadedModel.load(model.path, expected_sha256=model.sha256, roles=roles)


def model_problems(model: ResolvedModel, loaded: LoadedModel) -> list[str]:
    """The checks ``prepare`` makes of a model against its mapping entry, as plain sentences
    (used when a registry version is loaded while the gateway runs)."""
    problems = loaded.check(
        model.input,
        len(model.features),
        model.outputs.label,
        model.outputs.scores,
        model.outputs.value,
    )
    if model.outputs.label is not None and not (model.labels or loaded.labels):
        problems.append("the model has no `labels` metadata to name its classes")
    return problems
