"""Does a model file fit its mapping entry: loaded with the roles the mapping gives its outputs,
then checked against the entry's input shape, feature count, outputs and labels.

Here, not in ``bridge.prepare``, because the registry (``bridge.lifecycle``) makes the same
checks of a version it loads while the gateway runs, and a domain package must not import the
start-up step above it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.config.resolved import ResolvedModel

from .model import LoadedModel, OutputRoles

__all__ = ["FitProblem", "fit_problems", "load_model_for", "model_problems"]


@dataclass(frozen=True, slots=True)
class FitProblem:
    """One way a model does not fit its entry: ``key`` inside ``models.<name>``, and a fix."""

    key: tuple[str, ...]
    message: str
    fix: str


def load_model_for(model: ResolvedModel) -> LoadedModel:
    roles = OutputRoles(
        label=model.outputs.label, scores=model.outputs.scores, value=model.outputs.value
    )
    return LoadedModel.load(model.path, expected_sha256=model.sha256, roles=roles)


def fit_problems(model: ResolvedModel, loaded: LoadedModel) -> list[FitProblem]:
    """What ``bridge validate`` reports of a model against its mapping entry."""
    problems = [
        FitProblem((), problem, "make `input:`, `features:` and `outputs:` match the model")
        for problem in loaded.check(
            model.input,
            len(model.features),
            model.outputs.label,
            model.outputs.scores,
            model.outputs.value,
        )
    ]
    if model.outputs.label is not None and not (model.labels or loaded.labels):
        problems.append(
            FitProblem(
                ("outputs", "label"),
                "the model has no `labels` metadata to name its classes",
                "add `labels: [name0, name1, ...]` to the model",
            )
        )
    return problems


def model_problems(model: ResolvedModel, loaded: LoadedModel) -> list[str]:
    """The same checks as plain sentences (a registry version loaded while the gateway runs)."""
    return [p.message for p in fit_problems(model, loaded)]
