"""CSV data and the tabular pipeline behind ``groupinf audit`` and ``clean``.

Reads a CSV twice: with pandas (the values the model sees) and as raw bytes
split into records (so ``clean`` can copy the kept rows byte for byte). Every
problem with the user's data raises :class:`InputError`, which the command
line turns into a one-line message and exit status 2.
"""

import io
import os

import numpy as np

MODELS = ("auto", "logistic", "ridge", "linear", "poisson", "gamma")
CLASSIFIERS = ("logistic",)


class InputError(ValueError):
    """The user's data or options cannot be used (exit status 2, no traceback)."""


# ----------------------------------------------------------------- reading
def _split_records(data):
    """Byte spans ``(start, end)`` and first line numbers of the CSV records.

    A record ends at a newline outside double quotes and includes its line
    terminator; quoted fields may contain newlines. Works line by line (an odd
    number of ``"`` on a line toggles the quote state; ``""`` escapes count
    twice), so large files are split at C speed.

    Returns
    -------
    spans : list of (int, int)
    lines : list of int
        1-based line number on which each record starts.
    """
    spans, lines = [], []
    start = pos = 0
    line_no, first_line, quoted = 1, 1, False
    for piece in data.split(b"\n"):
        pos += len(piece) + 1
        if piece.count(b'"') % 2:
            quoted = not quoted
        if not quoted:
            end = min(pos, len(data))
            if end > start:
                spans.append((start, end))
                lines.append(first_line)
            start, first_line = end, line_no + 1
        line_no += 1
    if start < len(data):
        spans.append((start, len(data)))
        lines.append(first_line)
    return spans, lines


class RawCSV:
    """The bytes of a CSV file and the span of each data row.

    Parameters
    ----------
    path : str
        CSV file with a header line.
    data : bytes
        The file's content.
    """

    def __init__(self, path, data):
        self.path = path
        self.data = data
        spans, lines = _split_records(data)
        keep = [k for k, (a, b) in enumerate(spans) if data[a:b].strip()]
        self.header_span = spans[keep[0]] if keep else None
        self.row_spans = [spans[k] for k in keep[1:]]
        # 1-based line number on which each data row starts
        self.row_lines = [lines[k] for k in keep[1:]]

    def write_without(self, rows, out_path):
        """Write the file minus the data rows ``rows`` (0-based), byte for byte."""
        drop = {self.row_spans[r] for r in rows}
        pieces, pos = [], 0
        for span in self.row_spans:
            if span in drop:
                pieces.append(self.data[pos : span[0]])
                pos = span[1]
        pieces.append(self.data[pos:])
        out = b"".join(pieces)
        with open(out_path, "wb") as fh:
            fh.write(out)
        return len(out)


def read_csv(path, *, what="data file"):
    """Read ``path`` with pandas and as raw records; check it is usable.

    Returns
    -------
    df : pandas.DataFrame
    raw : RawCSV
    """
    import pandas as pd

    if not os.path.exists(path):
        raise InputError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise InputError(f"{what} {path!r} is a directory, not a CSV file")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path!r}: {exc.strerror}") from None
    if not data.strip():
        raise InputError(f"{what} {path!r} is empty")
    try:
        df = pd.read_csv(io.BytesIO(data))
    except pd.errors.EmptyDataError:
        raise InputError(f"{what} {path!r} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc)
        raise InputError(f"cannot parse {what} {path!r} as CSV: {msg}") from None
    if len(df) == 0:
        raise InputError(f"{what} {path!r} has a header but no data rows")
    raw = RawCSV(path, data)
    if len(raw.row_spans) != len(df):
        raise InputError(
            f"{what} {path!r}: found {len(raw.row_spans)} records but pandas read "
            f"{len(df)} rows (unusual quoting or line endings); save it as a "
            "standard comma-separated file"
        )
    return df, raw


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


def feature_columns(df, *, label, groups=None, drop=(), path):
    """Feature columns: all but the label, the groups and ``drop``; checked."""
    for col in drop:
        check_column(df, col, path=path, option="--drop")
    excluded = {label, groups, *drop}
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
    return features


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


def check_groups(df, column, *, path):
    """Return the groups column as an array; no missing values allowed."""
    check_column(df, column, path=path, option="--groups")
    g = df[column]
    if g.isna().any():
        raise InputError(
            f"groups column {column!r} of {path!r} is missing in "
            f"{_missing_rows(g.isna().to_numpy())}; fill them (e.g. with "
            "'unknown') so every row belongs to a group"
        )
    return g.to_numpy()


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
