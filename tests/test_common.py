"""scikit-learn's common estimator checks on GroupInfluence.

With the linear backends, and with a ``TorchModel`` backend (marked
``torch``): a ``torch.nn.LazyLinear`` module takes whatever number of features
a check passes, as scikit-learn's estimators do.
"""

import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_groupinf import GroupInfluence


def _expected_failed_checks(estimator):
    return {}


@parametrize_with_checks(
    [GroupInfluence(LogisticRegression()), GroupInfluence(Ridge())],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _torch_estimators():
    try:
        import torch
    except ImportError:  # the torch extra is not installed
        return []
    from sklearn_groupinf.torch import TorchModel

    def net(loss):
        return TorchModel(
            torch.nn.LazyLinear(1),
            loss=loss,
            weight_decay=1.0,
            device="cpu",
            random_state=0,
        )

    return [
        GroupInfluence(net("binary_cross_entropy")),
        GroupInfluence(net("squared_error")),
    ]


#: checks a TorchModel-backed GroupInfluence fails, and why
TORCH_EXPECTED_FAILURES = {
    "check_regressor_multioutput": (
        "the module fixes the number of outputs (here 1); a y with 5 columns "
        "needs a module with 5 outputs, and TorchModel says so with a ValueError"
    ),
}


def _torch_expected_failed_checks(estimator):
    return TORCH_EXPECTED_FAILURES


@pytest.mark.torch
@parametrize_with_checks(
    _torch_estimators(), expected_failed_checks=_torch_expected_failed_checks
)
def test_sklearn_compatible_torch(estimator, check):
    check(estimator)
