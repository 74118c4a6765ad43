"""What ``groupinf audit`` and ``groupinf clean`` do, given parsed options.

Every score is the estimated change of the target (the model's usual metric on
the validation rows, in its units) when the group or row is removed; positive
means removing it raises the validation loss, i.e. the data was helping.
"""

import os
from dataclasses import dataclass

import numpy as np

from ._progress import log, progress
from ._tabular import (
    CLASSIFIERS,
    InputError,
    as_categorical_safe,
    check_column,
    check_groups,
    check_label,
    choose_model,
    feature_columns,
    make_pipeline,
    read_csv,
    target_metric,
)


@dataclass
class Job:
    """Data, split and fitted influence state shared by audit and clean."""

    df: object
    raw: object
    model: str
    train: np.ndarray  # data-row indices of the training rows
    X: object
    y: np.ndarray
    groups: object
    X_val: object
    y_val: np.ndarray
    gi: object
    options: dict


def _check_distinct(path, *others):
    for other in others:
        if (
            other
            and os.path.exists(path)
            and os.path.exists(other)
            and os.path.samefile(path, other)
        ):
            raise InputError(
                f"output {other!r} is the input file {path!r}; the "
                "input is never overwritten, choose another name"
            )


def prepare(args):
    """Read, check and split the data, then fit ``GroupInfluence``."""
    from sklearn.model_selection import train_test_split

    from ._group_influence import GroupInfluence

    verbose = 0 if args.quiet else 1
    path = args.data
    df, raw = read_csv(path)
    check_column(df, args.label, path=path, option="--label")
    if df[args.label].isna().all():
        raise InputError(f"label column {args.label!r} of {path!r} is entirely missing")
    model = choose_model(args.model, df[args.label])
    y_all = check_label(df[args.label], model, column=args.label, path=path)
    groups_all = None
    if args.groups is not None:
        groups_all = check_groups(df, args.groups, path=path)
    features = feature_columns(
        df, label=args.label, groups=args.groups, drop=args.drop, path=path
    )
    X_all = as_categorical_safe(df[features])
    if args.validation is not None:
        dfv, _ = read_csv(args.validation, what="validation file")
        for col in [args.label, *features]:
            check_column(
                dfv,
                col,
                path=args.validation,
                option="feature" if col != args.label else "--label",
            )
        train = np.arange(len(df))
        X_val = as_categorical_safe(dfv[features])
        y_val = check_label(
            dfv[args.label],
            model,
            column=args.label,
            path=args.validation,
            classes=np.unique(y_all) if model in CLASSIFIERS else None,
        )
    else:
        f = args.validation_fraction
        if not 0 < f < 1:
            raise InputError(f"--validation-fraction must be in (0, 1); got {f}")
        idx = np.arange(len(df))
        strat = y_all if model in CLASSIFIERS else None
        if strat is not None and np.unique(strat, return_counts=True)[1].min() < 2:
            strat = None
        try:
            train, val = train_test_split(
                idx, test_size=f, stratify=strat, random_state=args.random_state
            )
        except ValueError as exc:
            raise InputError(
                f"cannot hold out --validation-fraction {f} of {len(df)} rows: {exc}"
            ) from None
        train = np.sort(train)
        val = np.sort(val)
        X_val, y_val = X_all.iloc[val], y_all[val]
    if model in CLASSIFIERS:
        check_label(df[args.label].iloc[train], model, column=args.label, path=path)
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
        f"groupinf: read {path} ({len(df)} rows, {df.shape[1]} columns)",
        verbose=verbose,
    )
    X, y = X_all.iloc[train], y_all[train]
    groups = None if groups_all is None else groups_all[train]
    pipe = make_pipeline(X, model, C=args.C, alpha=args.alpha)
    log(
        f"groupinf: model {type(pipe[-1]).__name__} on {len(train)} training rows "
        f"({len(features)} feature columns); target = its metric on "
        f"{len(y_val)} validation rows",
        verbose=verbose,
    )
    gi = GroupInfluence(pipe, method=args.method, damping=args.damping, verbose=verbose)
    gi.fit(X, y, X_target=X_val, y_target=y_val)
    return Job(
        df,
        raw,
        model,
        train,
        X,
        y,
        groups,
        X_val,
        y_val,
        gi,
        dict(C=args.C, alpha=args.alpha, verbose=verbose),
    )


def _refit_metric(job, keep, *, fixed_features=False):
    """Metric on the validation rows after a tight refit on ``keep`` rows.

    ``fixed_features=True`` refits only the final model on the feature map
    fitted on all training rows (what the estimates assume); otherwise the
    whole pipeline (imputers, scaler, encoder, model) is refitted, as a user
    would on the cleaned file.
    """
    from sklearn.pipeline import Pipeline

    pipe = make_pipeline(
        job.X, job.model, tight=True, C=job.options["C"], alpha=job.options["alpha"]
    )
    if fixed_features:
        features = job.gi.estimator_[:-1]
        Z = features.transform(job.X.iloc[keep])
        pipe = Pipeline(
            [("features", features), ("model", pipe[-1].fit(Z, job.y[keep]))]
        )
    else:
        pipe.fit(job.X.iloc[keep], job.y[keep])
    return target_metric(job.model)(job.y_val, pipe, job.X_val)


def _sign_note(gi):
    return (
        f"estimated change of validation {gi.target_name_} (now "
        f"{gi.target_value_:.6g}) when the group is removed; positive: "
        "removing it raises the loss (the group helps)"
    )


def audit(args):
    """Score every group; return the report as a DataFrame (sorted)."""
    import pandas as pd

    job = prepare(args)
    gi, method = job.gi, args.method
    methods = ["first_order", "interaction"]
    if method not in methods:
        methods.append(method)
    scores = {m: gi.score_groups(job.groups, method=m) for m in methods}
    base = scores[methods[0]]
    report = pd.DataFrame(
        {"group": base.groups, "size": base.size, "share": base.size / len(job.y)}
    )
    for m in methods:
        report[m] = scores[m].estimate
    report = report.sort_values(method, ascending=False, kind="stable")
    report = report.reset_index(drop=True)
    report.insert(0, "rank", np.arange(1, len(report) + 1))
    if args.refit > 0:
        order = np.argsort(-np.abs(report[method].to_numpy()), kind="stable")
        todo = order[: args.refit]
        actual = np.full(len(report), np.nan)
        ref = _refit_metric(job, np.arange(len(job.y)), fixed_features=True)
        for r in progress(
            todo, verbose=job.options["verbose"], desc="groupinf: refits"
        ):
            keep = np.flatnonzero(job.groups != report["group"].iloc[r])
            if len(keep) == 0:
                continue
            actual[r] = _refit_metric(job, keep, fixed_features=True) - ref
        report["actual"] = actual
    return job, report


def parse_budget(text):
    """``"10"`` -> 10 units, ``"0.2"`` -> a fraction of the pool."""
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise InputError(
                f"--budget must be a number of units or a fraction "
                f"in (0, 1); got {text!r}"
            ) from None
        if not 0 < value <= 1:
            raise InputError(f"a fractional --budget must be in (0, 1]; got {text}")
        return value
    if value < 1:
        raise InputError(f"--budget must be >= 1; got {text}")
    return value


def clean(args):
    """Select rows or groups to remove; write the kept rows and a report."""
    import pandas as pd

    budget = parse_budget(args.budget)
    if args.method == "newton":
        raise InputError(
            "--method newton has no pairwise form, so clean cannot "
            "select with it; use interaction or second_order"
        )
    _check_distinct(args.data, args.out, args.report)
    if args.validation:
        _check_distinct(args.validation, args.out, args.report)
    job = prepare(args)
    gi = job.gi
    pool = len(job.y) if job.groups is None else len(np.unique(job.groups))
    if isinstance(budget, int) and budget > pool:
        raise InputError(
            f"--budget {budget} is larger than the {pool} "
            f"{'rows' if job.groups is None else 'groups'} that can "
            "be removed"
        )
    sel = gi.select(
        budget,
        groups=job.groups,
        goal=args.goal,
        method=args.method,
        n_rounds=args.n_rounds,
        stop_early=args.stop_early,
    )
    est = np.asarray(sel.estimates, dtype=float)
    marginal = np.diff(np.concatenate([[0.0], est]))
    if job.groups is None:
        units = [(int(i), [int(i)]) for i in sel.indices]
    else:
        units = [(g, np.flatnonzero(job.groups == g).tolist()) for g in sel.groups]
    rows = []
    for step, ((unit, members), m, cum, rnd) in enumerate(
        zip(units, marginal, est, sel["round"]), 1
    ):
        for i in members:
            r = int(job.train[i])
            rows.append(
                dict(
                    row=r,
                    line=job.raw.row_lines[r],
                    step=step,
                    round=int(rnd) + 1,
                    **({} if job.groups is None else {"group": unit}),
                    label=job.y[i],
                    estimated_change=m,
                    cumulative_estimate=cum,
                    why=f"step {step}: removing this "
                    f"{'row' if job.groups is None else 'group'} changes "
                    f"the estimated validation {gi.target_name_} by "
                    f"{m:+.4g} (goal: {args.goal})",
                )
            )
    report = pd.DataFrame(rows)
    removed = sorted(r["row"] for r in rows)
    keep = np.setdiff1d(np.arange(len(job.y)), np.searchsorted(job.train, removed))
    before = _refit_metric(job, np.arange(len(job.y)))
    after = _refit_metric(job, keep) if len(keep) else np.nan
    size = job.raw.write_without(removed, args.out)
    summary = dict(
        n_removed=len(removed),
        n_kept=len(job.df) - len(removed),
        target=gi.target_name_,
        before=before,
        estimated_change=est[-1] if len(est) else 0.0,
        measured_change=after - before,
        bytes=size,
    )
    return job, report, summary
