"""
===========================================
Interactions among groups: redundant groups
===========================================

The interaction-aware estimate for removing two groups ``g`` and ``h``
together is the sum of their own estimates plus the pairwise term
``K[g, h]``:

.. math::

    \\widehat{\\Delta f}(g \\cup h) = \\widehat{\\Delta f}(g)
        + \\widehat{\\Delta f}(h) + K_{gh}.

``K[g, h]`` is in the target's units. When two groups carry the same
information, each one alone matters little (the other still covers it) but
removing both matters more than the sum of their effects; the heatmap shows
where that happens. Here we build an obvious case: group 5 is a near copy of
group 4.
"""

# %%
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sklearn_groupinf import GroupInfluence
from sklearn_groupinf.plotting import InteractionHeatmapDisplay

X, y = load_breast_cancer(return_X_y=True)
X = StandardScaler().fit_transform(X)
X_train, X_val, y_train, y_val = train_test_split(
    X, y, test_size=0.3, stratify=y, random_state=0
)
rng = np.random.default_rng(0)
groups = rng.integers(0, 5, size=len(y_train))
# group 5: a jittered copy of group 4
copy = groups == 4
jitter = 0.01 * rng.normal(size=X_train[copy].shape)
X_train = np.vstack([X_train, X_train[copy] + jitter])
y_train = np.concatenate([y_train, y_train[copy]])
groups = np.concatenate([groups, np.full(copy.sum(), 5)])

gi = GroupInfluence(LogisticRegression(C=0.5)).fit(
    X_train, y_train, X_target=X_val, y_target=y_val
)
# The diagonal K[g, g] belongs to each group's own estimate; leave it blank so
# the pairs stand out.
disp = InteractionHeatmapDisplay.from_estimator(gi, groups, include_diagonal=False)
disp.ax_.set_title("pairwise interaction K[g, h] (log-loss units)")


# %%
# Positive entries (the copies 4 and 5) mean that removing the pair raises the
# loss more than the two single estimates add up to; negative entries (group 2
# with 4 and 5 here) mean less.
#
# Check the pair (4, 5) against refits
# ------------------------------------
def refit_change(drop):
    keep = ~np.isin(groups, drop)
    model = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000)
    model.fit(X_train[keep], y_train[keep])
    full = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000)
    full.fit(X_train, y_train)
    return log_loss(y_val, model.predict_proba(X_val)) - log_loss(
        y_val, full.predict_proba(X_val)
    )


s = gi.score_groups(groups, method="interaction")
fo = gi.score_groups(groups, method="first_order")
both = gi.score_groups(np.where(groups == 5, 4, groups), method="interaction")
print(f"K[4, 5] = {disp.matrix[4, 5]:+.5f}")
for g in (4, 5):
    print(
        f"remove {g} alone: estimate {s.estimate[g]:+.5f}, "
        f"actual {refit_change([g]):+.5f}"
    )
print(
    f"remove both:    first-order sum {fo.estimate[4] + fo.estimate[5]:+.5f}, "
    f"interaction {both.estimate[4]:+.5f}, actual {refit_change([4, 5]):+.5f}"
)
