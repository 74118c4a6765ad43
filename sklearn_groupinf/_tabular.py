"""Checks of the user's table and the tabular pipeline of ``groupinf``.

Every problem with the user's data raises :class:`InputError`, which the
command line turns into a one-line message and exit status 2.
"""

import numpy as np

from ._csvio import InputError, RawCSV, read_csv  # noqa: F401  (re-exported)

MODELS = ("auto", "logistic", "ridge", "linear", "poisson", "gamma")
CLASSIFIERS = ("logistic",)


# --------------------------------------------------------------- checking
def _missing_rows(mask, limit=5):
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(r) for r in rows[:limit])
    more = ", ..." if len(rows) > limit else ""
    return f"{len(rows)} row(s) (data rows {shown}{more})"


def check_column(df, column, *, path, option):
    """Raise :class:`InputError` unless ``column`` is a column of ``df``."""
    if column not in df.columns:
        cols = ", ".join(map(str, df.columns[:12]))
        more = ", ..." if len(df.columns) > 12 else ""
        raise InputError(
            f"{option} column {column!r} is not in {path!r} (columns: {cols}{more})"
        )


def feature_columns(df, *, label, groups=(), drop=(), keep_groups=False, path):
    """Feature columns: all but the label, ``drop`` and (unless
    ``keep_groups``) the groups columns; checked."""
    for col in drop:
        check_column(df, col, path=path, option="--drop")
    excluded = {label, *drop, *(() if keep_groups else groups)}
    features = [c for c in df.columns if c not in excluded]
    if not features:
        raise InputError(
            f"{path!r} has no feature columns left besides the "
            "label, groups and dropped columns"
        )
    empty = [c for c in features if df[c].isna().all()]
    if empty:
        raise InputError(
            f"column {empty[0]!r} of {path!r} is entirely missing; remove it or "
            f"pass --drop {empty[0]}"
        )
    check_finite(df, features, path=path)
    return features


def check_finite(df, features, *, path):
    """Refuse infinite values in numeric feature columns (missing ones are imputed)."""
    for col in features:
        values = df[col].to_numpy()
        if values.dtype.kind == "f" and np.isinf(values).any():
            raise InputError(
                f"feature column {col!r} of {path!r} is infinite in "
                f"{_missing_rows(np.isinf(values))}; leave those cells empty (they "
                f"are imputed) or fix them, or pass --drop {col}"
            )


#: a categorical feature may have at most this many distinct values ...
MAX_LEVELS = 1000
#: ... and at most this fraction of the rows (an identifier has about one
#: value per row: one-hot encoded, it adds a parameter per row)
MAX_LEVEL_FRACTION = 0.5


def default_max_levels(n_rows):
    """Most distinct values a categorical feature may have without --max-levels:
    ``min(MAX_LEVELS, MAX_LEVEL_FRACTION * n_rows)``, but at least 20."""
    return max(20, min(MAX_LEVELS, int(MAX_LEVEL_FRACTION * n_rows)))


def check_levels(X, *, max_levels, path):
    """Refuse non-numeric features with more than ``max_levels`` values.

    Such a column (an id, a free-text note) one-hot encodes into a parameter
    per value: the model becomes huge and slow, and it can memorise rows.
    """
    import pandas as pd

    for c in X.columns:
        if pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c]):
            continue
        levels = X[c].nunique(dropna=True)
        if levels > max_levels:
            values = X[c].dropna()
            text = pd.to_numeric(values, errors="coerce").isna().to_numpy()
            if text.mean() <= 0.1:  # numbers with a few placeholders ("?", "n/a")
                rows = np.flatnonzero(X[c].index.isin(values.index[text]))
                raise InputError(
                    f"column {c!r} of {path!r} holds numbers except for "
                    f"{sorted(set(values[text].astype(str)))[:3]} in "
                    f"{_missing_rows(np.isin(np.arange(len(X)), rows))}; leave "
                    "missing cells empty (they are imputed) or fix them, or pass "
                    f"--drop {c}"
                )
            raise InputError(
                f"non-numeric column {c!r} of {path!r} has {levels} distinct "
                f"values in {len(X)} rows (an identifier or free text?); one-hot "
                f"encoded it would add {levels} parameters (the limit is "
                f"--max-levels {max_levels}). Pass --drop {c} if it is not a "
                "feature, or --max-levels N to allow it"
            )


def choose_model(kind, y):
    """Resolve ``--model auto``: logistic for non-numeric or few-valued labels."""
    if kind != "auto":
        return kind
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "logistic"
    values = y.to_numpy(dtype=float)
    if np.all(values == np.round(values)) and len(np.unique(values)) <= 10:
        return "logistic"
    return "ridge"


def check_label(y, model, *, column, path, classes=None):
    """Validate the label column for ``model``; return it as a numpy array."""
    import pandas as pd

    if y.isna().all():
        raise InputError(f"label column {column!r} of {path!r} is entirely missing")
    if y.isna().any():
        raise InputError(
            f"label column {column!r} of {path!r} is missing in "
            f"{_missing_rows(y.isna().to_numpy())}; drop or fill them"
        )
    if model in CLASSIFIERS:
        values = y.to_numpy()
        if values.dtype.kind == "f" and np.any(values != np.round(values)):
            frac = values[values != np.round(values)]
            raise InputError(
                f"--model {model} needs class labels, but column {column!r} of "
                f"{path!r} has non-integer values such as {frac[0]:g} (a "
                "regression target?); use --model ridge, or auto"
            )
        found = (
            np.unique(values.astype(str))
            if values.dtype == object
            else np.unique(values)
        )
        if classes is None and len(found) < 2:
            raise InputError(
                f"label column {column!r} of {path!r} has a single class "
                f"({found[0].item()!r}); a classifier needs at least two"
            )
        if classes is not None:
            unseen = sorted(
                map(str, set(found.tolist()) - set(np.asarray(classes).tolist()))
            )
            if unseen:
                raise InputError(
                    f"label column {column!r} of {path!r} has class(es) "
                    f"{unseen[:5]} that never occur in the training rows"
                )
        return values
    numeric = pd.to_numeric(y, errors="coerce")
    bad = numeric.isna().to_numpy()
    if bad.any():
        raise InputError(
            f"--model {model} needs a numeric label, but column {column!r} of "
            f"{path!r} has non-numeric values such as {y[bad].iloc[0]!r}"
        )
    values = numeric.to_numpy(dtype=np.float64)
    if model == "poisson" and np.any(values < 0):
        raise InputError(
            f"--model poisson needs a label >= 0; column {column!r} "
            f"of {path!r} has {values.min():g}"
        )
    if model == "gamma" and np.any(values <= 0):
        raise InputError(
            f"--model gamma needs a label > 0; column {column!r} "
            f"of {path!r} has {values.min():g}"
        )
    return values


def check_groups(df, columns, *, path):
    """The groups as an array; several columns: their combination.

    A row's group label is its value of the single groups column, or the
    values of several columns joined by ``" | "`` (e.g. ``"A | 2024"``).
    No missing values are allowed.
    """
    for column in columns:
        check_column(df, column, path=path, option="--groups")
        g = df[column]
        if g.isna().any():
            raise InputError(
                f"groups column {column!r} of {path!r} is missing in "
                f"{_missing_rows(g.isna().to_numpy())}; fill them (e.g. with "
                "'unknown') so every row belongs to a group"
            )
    if len(columns) == 1:
        return df[columns[0]].to_numpy()
    parts = [df[c].astype(str).to_numpy(dtype=object) for c in columns]
    return np.array([" | ".join(values) for values in zip(*parts)], dtype=object)


# --------------------------------------------------------------- pipeline
def make_estimator(model, *, C=1.0, alpha=1.0, tight=False):
    """The final linear model of the pipeline (``tight``: for exact refits)."""
    from sklearn.linear_model import (
        GammaRegressor,
        LinearRegression,
        LogisticRegression,
        PoissonRegressor,
        Ridge,
    )

    tol = dict(tol=1e-10, max_iter=10000) if tight else dict(max_iter=1000)
    if model == "logistic":
        return LogisticRegression(C=C, **tol)
    if model == "ridge":
        return Ridge(alpha=alpha)
    if model == "linear":
        return LinearRegression()
    if model == "poisson":
        return PoissonRegressor(alpha=alpha, **tol)
    if model == "gamma":
        return GammaRegressor(alpha=alpha, **tol)
    raise InputError(f"unknown --model {model!r}; choose from {', '.join(MODELS)}")


def make_pipeline(X, model, **kw):
    """Imputation + scaling (numeric), imputation + one-hot (categorical), model.

    Earlier steps are a fixed feature map for :class:`GroupInfluence`; only the
    final linear model's parameters are perturbed by removing rows.
    """
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.pipeline import make_pipeline as mk
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [
        c
        for c in X.columns
        if pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c])
    ]
    categorical = [c for c in X.columns if c not in numeric]
    steps = []
    if numeric:
        steps.append(
            ("numeric", mk(SimpleImputer(strategy="median"), StandardScaler()), numeric)
        )
    if categorical:
        steps.append(
            (
                "categorical",
                mk(
                    SimpleImputer(strategy="constant", fill_value="missing"),
                    # unpenalised models: drop one level so the dummies and the
                    # intercept are not collinear (singular Hessian)
                    OneHotEncoder(
                        handle_unknown="ignore",
                        sparse_output=False,
                        drop="first" if model == "linear" else None,
                    ),
                ),
                categorical,
            )
        )
    pre = ColumnTransformer(steps, sparse_threshold=0.0)
    return Pipeline([("features", pre), ("model", make_estimator(model, **kw))])


def as_categorical_safe(X):
    """Cast non-numeric feature columns to ``object`` with NaN for missing."""
    import pandas as pd

    X = X.copy()
    for c in X.columns:
        if not pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]):
            X[c] = X[c].astype(object).where(X[c].notna(), np.nan)
            X[c] = X[c].map(lambda v: v if isinstance(v, float) else str(v))
    return X


def target_metric(model):
    """``metric(y_true, fitted_pipeline, X)`` matching the default target."""
    from sklearn import metrics

    if model in CLASSIFIERS:
        return lambda y, est, X: metrics.log_loss(
            y, est.predict_proba(X), labels=est.classes_
        )
    if model == "poisson":
        return lambda y, est, X: metrics.mean_poisson_deviance(y, est.predict(X))
    if model == "gamma":
        return lambda y, est, X: metrics.mean_gamma_deviance(y, est.predict(X))
    return lambda y, est, X: metrics.mean_squared_error(y, est.predict(X))
