"""The number an explanation explains, computed by the model itself for rows of features.

Here and not in ``bridge.explain``: it runs the model's session and reads its output roles,
which are inference's business; ``bridge.explain`` only sees a function from rows to numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from bridge.inference.model import LoadedModel

__all__ = ["score_function"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def score_function(
    loaded: LoadedModel, classes: npt.NDArray[np.int64] | None
) -> Callable[[F32], F64]:
    """For rows of ``x``: a classifier's probability of the class it chose for the row's
    original (``classes``, repeated per perturbed row), a regressor's value. Without a scores
    output a classifier gives 1/0 (same class or not)."""
    roles = loaded.roles
    input_name = loaded.io.inputs[0].name

    def score(x: F32) -> F64:
        if roles.value is not None:
            (values,) = loaded.session.run([roles.value], {input_name: x})
            return np.asarray(values, dtype=np.float64).reshape(x.shape[0])
        assert classes is not None
        reps = x.shape[0] // classes.size
        want = np.repeat(classes, reps) if reps > 1 else classes
        if roles.scores is not None:
            (probs,) = loaded.session.run([roles.scores], {input_name: x})
            p = np.asarray(probs, dtype=np.float64)
            chosen: F64 = p[np.arange(x.shape[0]), want]
            return chosen
        assert roles.label is not None
        (labels,) = loaded.session.run([roles.label], {input_name: x})
        same: F64 = (np.asarray(labels).reshape(-1) == want).astype(np.float64)
        return same

    return score
