"""Reading, checking and fitting shared by ``groupinf audit`` and ``clean``,
and what ``audit`` computes.

Every score is the estimated change of the target (the model's usual metric on
the validation rows, in its units) when the group or row is removed; positive
means removing it raises the validation loss, i.e. the data was helping.
Nothing here writes a file: the results go back to ``_cli_output``.
"""

import warnings
from dataclasses import dataclass

import numpy as np

from ._progress import log, progress
from ._tabular import (
    CLASSIFIERS,
    InputError,
    as_categorical_safe,
    check_column,
    check_finite,
    check_groups,
    check_label,
    check_levels,
    choose_model,
    default_max_levels,
    feature_columns,
    make_pipeline,
    read_csv,
    target_metric,
)

DEFAULT_VALIDATION_FRACTION = 0.2
METRIC_NAMES = dict(
    logistic="log_loss",
    ridge="mean_squared_error",
    linear="mean_squared_error",
    poisson="mean_poisson_deviance",
    gamma="mean_gamma_deviance",
)


@dataclass
class Table:
    """The checked input: all rows, features, label and groups."""

    df: object
    raw: object
    model: str
    features: list
    X: object
    y: np.ndarray
    groups: object
    verbose: int

    def describe(self, args):
        """One line saying which columns are features (printed on stdout)."""
        text = f"# features ({len(self.features)}): {', '.join(self.features)}"
        if args.groups:
            cols = ", ".join(repr(c) for c in args.groups)
            if args.keep_groups_as_feature:
                text += f"; groups column(s) {cols} kept as features"
            else:
                text += (
                    f"; groups column(s) {cols} not used as features "
                    "(--keep-groups-as-feature keeps them)"
                )
        return text


@dataclass
class Job:
    """Training / validation split and fitted influence state (audit, clean)."""

    table: Table
    train: np.ndarray  # data-row indices of the training rows
    X: object
    y: np.ndarray
    groups: object
    X_val: object
    y_val: np.ndarray
    gi: object
    options: dict


def read_table(args, *, copyable=False):
    """Read and check the data file, the label, the groups and the features."""
    verbose = 0 if args.quiet else 1
    path = args.data
    df, raw = read_csv(path, copyable=copyable)
    check_column(df, args.label, path=path, option="--label")
    if df[args.label].isna().all():
        raise InputError(f"label column {args.label!r} of {path!r} is entirely missing")
    model = choose_model(args.model, df[args.label])
    y_all = check_label(df[args.label], model, column=args.label, path=path)
    groups_all = None
    if args.groups:
        if args.label in args.groups:
            raise InputError(f"--label {args.label!r} cannot also be a --groups column")
        groups_all = check_groups(df, args.groups, path=path)
    features = feature_columns(
        df,
        label=args.label,
        groups=args.groups or (),
        drop=args.drop,
        keep_groups=args.keep_groups_as_feature,
        path=path,
    )
    X_all = as_categorical_safe(df[features])
    max_levels = args.max_levels or default_max_levels(len(df))
    check_levels(X_all, max_levels=max_levels, path=path)
    return Table(df, raw, model, features, X_all, y_all, groups_all, verbose)


def prepare(args, table=None):
    """Split off the validation rows (or read them) and fit ``GroupInfluence``."""
    from sklearn.model_selection import train_test_split

    from ._group_influence import GroupInfluence

    t = read_table(args) if table is None else table
    path, model, features, y_all, X_all = args.data, t.model, t.features, t.y, t.X
    if args.validation is not None:
        dfv, _ = read_csv(args.validation, what="validation file")
        for col in [args.label, *features]:
            check_column(
                dfv,
                col,
                path=args.validation,
                option="feature" if col != args.label else "--label",
            )
        train = np.arange(len(t.df))
        check_finite(dfv, features, path=args.validation)
        X_val = as_categorical_safe(dfv[features])
        y_val = check_label(
            dfv[args.label],
            model,
            column=args.label,
            path=args.validation,
            classes=np.unique(y_all) if model in CLASSIFIERS else None,
        )
    else:
        f = args.validation_fraction or DEFAULT_VALIDATION_FRACTION
        idx = np.arange(len(t.df))
        strat = y_all if model in CLASSIFIERS else None
        if strat is not None and np.unique(strat, return_counts=True)[1].min() < 2:
            strat = None
        try:
            train, val = train_test_split(
                idx, test_size=f, stratify=strat, random_state=args.random_state
            )
        except ValueError as exc:
            raise InputError(
                f"cannot hold out --validation-fraction {f} of {len(t.df)} rows: {exc}"
            ) from None
        train = np.sort(train)
        val = np.sort(val)
        X_val, y_val = X_all.iloc[val], y_all[val]
    if model in CLASSIFIERS:
        check_label(t.df[args.label].iloc[train], model, column=args.label, path=path)
        unseen = sorted(
            set(np.unique(y_val).tolist()) - set(np.unique(y_all[train]).tolist())
        )
        if unseen:
            raise InputError(
                f"validation labels {unseen[:5]} never occur in the "
                "training rows; use a larger --validation-fraction "
                "or another --validation file"
            )
    # progress starts once the data are checked: bad input gives one line only
    log(
        f"groupinf: read {path} ({len(t.df)} rows, {t.df.shape[1]} columns)",
        verbose=t.verbose,
    )
    X, y = X_all.iloc[train], y_all[train]
    groups = None if t.groups is None else t.groups[train]
    pipe = make_pipeline(X, model, C=args.C, alpha=args.alpha)
    log(
        f"groupinf: model {type(pipe[-1]).__name__} on {len(train)} training rows "
        f"({len(features)} feature columns); target = its metric on "
        f"{len(y_val)} validation rows",
        verbose=t.verbose,
    )
    gi = GroupInfluence(pipe, verbose=t.verbose, **_library_options(args))
    gi.fit(X, y, X_target=X_val, y_target=y_val)
    options = dict(C=args.C, alpha=args.alpha, verbose=t.verbose)
    return Job(t, train, X, y, groups, X_val, y_val, gi, options)


def _library_options(args, names=("method", "damping")):
    """The options the user gave; the others keep the library's defaults."""
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def _refit_metric(job, keep, *, fixed_features=False):
    """Metric on the validation rows after a tight refit on ``keep`` rows.

    ``fixed_features=True`` refits only the final model on the feature map
    fitted on all training rows (what the estimates assume); otherwise the
    whole pipeline (imputers, scaler, encoder, model) is refitted, as a user
    would on the cleaned file.
    """
    from sklearn.pipeline import Pipeline

    model, opts = job.table.model, job.options
    pipe = make_pipeline(job.X, model, tight=True, C=opts["C"], alpha=opts["alpha"])
    if fixed_features:
        features = job.gi.estimator_[:-1]
        Z = features.transform(job.X.iloc[keep])
        pipe = Pipeline(
            [("features", features), ("model", pipe[-1].fit(Z, job.y[keep]))]
        )
    else:
        pipe.fit(job.X.iloc[keep], job.y[keep])
    return target_metric(model)(job.y_val, pipe, job.X_val)


def _trust_warning():
    """The library's warning about flagged group estimates (if it has one)."""
    import sklearn_groupinf

    return getattr(sklearn_groupinf, "UnreliableEstimateWarning", Warning)


def sign_note(gi):
    return (
        f"estimated change of validation {gi.target_name_} (now "
        f"{gi.target_value_:.6g}) when the group is removed; positive: "
        "removing it raises the loss (the group helps)"
    )


def audit(args):
    """Score every group; return the job and the report (a sorted DataFrame)."""
    import pandas as pd

    job = prepare(args)
    gi = job.gi
    main = gi.score_groups(job.groups)  # the --method / library default
    method = main.method
    scores = {method: main}
    with warnings.catch_warnings():  # trust warnings concern --method only
        warnings.simplefilter("ignore", _trust_warning())
        for m in ("first_order", "interaction"):
            if m not in scores:
                scores[m] = gi.score_groups(job.groups, method=m)
    report = pd.DataFrame(
        {"group": main.groups, "size": main.size, "share": main.size / len(job.y)}
    )
    for m in ("first_order", "interaction", method):
        report[m] = scores[m].estimate
    if main.get("reliable") is not None:  # the per-group trust flag
        report["reliable"] = np.asarray(main["reliable"], dtype=bool)
    report = report.sort_values(method, ascending=False, kind="stable")
    report = report.reset_index(drop=True)
    report.insert(0, "rank", np.arange(1, len(report) + 1))
    if args.refit > 0:
        order = np.argsort(-np.abs(report[method].to_numpy()), kind="stable")
        actual = np.full(len(report), np.nan)
        ref = _refit_metric(job, np.arange(len(job.y)), fixed_features=True)
        todo = order[: args.refit]
        verbose = job.options["verbose"]
        for r in progress(todo, verbose=verbose, desc="groupinf: refits"):
            keep = np.flatnonzero(job.groups != report["group"].iloc[r])
            if len(keep) == 0:
                continue
            actual[r] = _refit_metric(job, keep, fixed_features=True) - ref
        report["actual"] = actual
    return job, method, report
