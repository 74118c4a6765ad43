"""scikit-learn's common estimator checks on GroupInfluence."""

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
