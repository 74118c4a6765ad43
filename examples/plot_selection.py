"""
======================================================
Cleaning flipped labels: greedy selection and its path
======================================================

A fifth of the training labels are flipped. We ask
:meth:`~sklearn_groupinf.GroupInfluence.select` for the 40 rows whose joint
removal lowers the validation log-loss most, with the first-order estimate
(top-k of individual influences) and with the interaction-aware estimate
(greedy on the quadratic form, which discounts redundant rows), then verify
each path by refitting without the selected prefixes (every 10 steps).

The path is the estimated change of the validation log-loss, in its units,
after removing the first *k* selected rows (negative: removal lowers the loss).
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sklearn_groupinf import GroupInfluence
from sklearn_groupinf.plotting import SelectionPathDisplay

X, y = load_breast_cancer(return_X_y=True)
X = StandardScaler().fit_transform(X)
X_train, X_val, y_train, y_val = train_test_split(
    X, y, test_size=0.3, stratify=y, random_state=0
)
rng = np.random.default_rng(0)
flipped = rng.random(len(y_train)) < 0.2
y_train = np.where(flipped, 1 - y_train, y_train)

gi = GroupInfluence(LogisticRegression(C=0.5)).fit(
    X_train, y_train, X_target=X_val, y_target=y_val
)


def refit_loss(removed):
    keep = np.setdiff1d(np.arange(len(y_train)), removed)
    model = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000)
    model.fit(X_train[keep], y_train[keep])
    return log_loss(y_val, model.predict_proba(X_val))


base = refit_loss([])
budget = 40
fig, ax = plt.subplots()
for method in ("first_order", "interaction"):
    sel = gi.select(budget, method=method)
    actual = np.full(budget, np.nan)  # refit every 10 steps
    for k in range(10, budget + 1, 10):
        actual[k - 1] = refit_loss(sel.indices[:k]) - base
    SelectionPathDisplay.from_selection(
        sel, actual=actual, target_name=gi.target_name_, ax=ax
    )
    print(
        f"{method:>12}: {flipped[sel.indices].sum()} of {budget} selected rows "
        f"were flipped; estimated change {sel.estimates[-1]:+.4f}, "
        f"actual {actual[-1]:+.4f} (log-loss {base:.4f} -> "
        f"{base + actual[-1]:.4f})"
    )
ax.set_title("Removing rows greedily: estimated (line) vs refit (dots)")
fig.tight_layout()

# %%
# On this data both estimators pick only flipped rows and reach about the same
# refitted loss. Both paths underestimate the actual gain as the budget grows,
# the interaction-aware one more (its pairwise term says that removing many
# similar flipped rows helps less than the sum of their effects, while the
# refits show the gains keep adding up here).
#
# Large budgets leave the region where the local expansion is accurate; split
# the budget into adaptive rounds (select, refit, recompute) with
# ``n_rounds``:
sel = gi.select(budget, method="interaction", n_rounds=4)
print(
    f"4 rounds: {flipped[sel.indices].sum()} of {budget} flipped; measured "
    f"log-loss after each round: {np.round(sel.measured, 4)}"
)
