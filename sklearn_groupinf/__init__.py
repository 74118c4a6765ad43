"""Interaction-aware group influence for scikit-learn and PyTorch models.

Every score is the estimated change of the target, in the target's own units,
when the example or group is removed (positive: removal raises the target).
"""

from ._group_influence import GroupInfluence
from ._hessian import (
    CGConvergenceWarning,
    IllConditionedHessianWarning,
    IndefiniteHessianError,
    NotStationaryWarning,
)
from ._results import GroupScores, Selection
from ._selector import GroupSelector
from ._trust import UnreliableEstimateWarning
from .backends import UnsupportedEstimatorError

__version__ = "0.1.0"

__all__ = [
    "GroupInfluence",
    "GroupScores",
    "GroupSelector",
    "Selection",
    "CGConvergenceWarning",
    "IllConditionedHessianWarning",
    "IndefiniteHessianError",
    "NotStationaryWarning",
    "UnreliableEstimateWarning",
    "UnsupportedEstimatorError",
    "__version__",
]
