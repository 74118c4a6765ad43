"""What ``groupinf clean`` computes: the rows (or groups) to remove and why.

Without a trusted validation file the choice is :class:`GroupSelector`'s with
its own defaults (the options the user gives override them); with one, it is
:meth:`GroupInfluence.select` against that file. Every estimate is the change
of the target (the model's usual metric, in its units) when the rows are
removed. Nothing here writes a file: the results go back to ``_cli_output``.
"""

import numpy as np

from ._commands import (
    METRIC_NAMES,
    _library_options,
    _refit_metric,
    prepare,
    read_table,
)
from ._progress import log
from ._tabular import InputError, make_pipeline


def parse_budget(text):
    """``"10"`` or ``"10.0"`` -> 10 units, ``"0.2"`` -> a fraction, ``"auto"``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = np.nan
    if not np.isfinite(value) or value <= 0:
        raise InputError(
            f"--budget must be a number of units (e.g. 5), a fraction in (0, 1) "
            f"(e.g. 0.05) or auto; got {text!r}"
        )
    if value < 1:
        return value
    if value != round(value):
        raise InputError(
            f"--budget {text} is neither a whole number of units (e.g. 5 or 5.0) "
            "nor a fraction in (0, 1) (e.g. 0.05)"
        )
    return int(round(value))


def _report_row(table, r, step, unit, why, extra=()):
    row = dict(row=int(r), line=table.raw.row_lines[r], step=step)
    if table.groups is not None:
        row["group"] = unit
    return dict(row, label=table.y[r], **dict(extra), why=why)


def clean(args):
    """Choose the rows or groups to remove; return the report and a summary.

    Without ``--validation FILE`` (and ``--goal decrease``) the choice is
    :class:`GroupSelector`'s with its defaults, except the options given;
    with it, :meth:`GroupInfluence.select` against the validation rows.
    """
    budget = parse_budget(args.budget)
    table = read_table(args, copyable=True)
    if args.validation is not None or args.goal == "increase":
        return _clean_with_target(args, table, budget)
    return _clean_with_selector(args, table, budget)


def _clean_with_selector(args, table, budget):
    import pandas as pd

    from ._selector import GroupSelector

    opts = dict(_library_options(args, ("method", "damping", "n_rounds")))
    if args.validation_fraction is not None:
        opts["validation"] = args.validation_fraction
    if args.stop_early:
        opts["stop_early"] = True
    pipe = make_pipeline(table.X, table.model, C=args.C, alpha=args.alpha)
    selector = GroupSelector(
        pipe,
        budget=budget,
        groups_as_units=table.groups is not None,
        random_state=args.random_state,
        **opts,
    )
    shown = selector.get_params(deep=False)
    settings = ", ".join(
        f"{k}={shown[k]!r}"
        for k in ("budget", "validation", "method", "n_rounds", "damping")
        if k in shown
    )
    log(
        f"groupinf: read {args.data} ({len(table.df)} rows); "
        f"GroupSelector({settings}) with {type(pipe[-1]).__name__}",
        verbose=table.verbose,
    )
    selector.fit(table.X, table.y, groups=table.groups)
    metric = METRIC_NAMES[table.model]
    rows = []
    if table.groups is None:
        for step, r in enumerate(selector.removed_indices_, 1):
            why = (
                f"step {step}: removing this row is estimated to lower the "
                f"{metric} of the other rows (scored against their own labels)"
            )
            rows.append(_report_row(table, r, step, None, why))
    else:
        for step, g in enumerate(selector.removed_groups_, 1):
            why = (
                f"step {step}: removing this group is estimated to lower the "
                f"{metric} of the other rows (scored against their own labels)"
            )
            for r in np.flatnonzero(table.groups == g):
                rows.append(_report_row(table, r, step, g, why))
    removed = sorted(int(r["row"]) for r in rows)
    summary = dict(
        n_removed=len(removed),
        n_kept=len(table.df) - len(removed),
        how=[
            f"chosen by GroupSelector({settings})",
            "(the library's defaults except the options you gave); no trusted "
            "validation rows:",
            "each row was scored against the labels of the other rows; pass "
            "--validation FILE.csv",
            "with trusted labels to measure the change of the metric",
        ],
    )
    return table, pd.DataFrame(rows), removed, summary


def _clean_with_target(args, table, budget):
    import pandas as pd

    if budget == "auto":
        raise InputError(
            "--budget auto is available without --validation and with "
            "--goal decrease; give a number of units or a fraction"
        )
    job = prepare(args, table)
    gi = job.gi
    pool = len(job.y) if job.groups is None else len(np.unique(job.groups))
    if isinstance(budget, int) and budget > pool:
        unit = "rows" if job.groups is None else "groups"
        raise InputError(
            f"--budget {budget} is larger than the {pool} {unit} that can be removed"
        )
    sel = gi.select(
        budget,
        groups=job.groups,
        goal=args.goal,
        n_rounds=args.n_rounds or 1,
        stop_early=args.stop_early,
        **_library_options(args, ("method",)),
    )
    est = np.asarray(sel.estimates, dtype=float)
    marginal = np.diff(np.concatenate([[0.0], est]))
    if job.groups is None:
        units = [(None, [int(i)]) for i in sel.indices]
    else:
        units = [(g, np.flatnonzero(job.groups == g).tolist()) for g in sel.groups]
    unit_name = "row" if job.groups is None else "group"
    rows = []
    for step, ((unit, members), m, cum, rnd) in enumerate(
        zip(units, marginal, est, sel["round"]), 1
    ):
        why = (
            f"step {step}: removing this {unit_name} changes the estimated "
            f"validation {gi.target_name_} by {m:+.4g} (goal: {args.goal})"
        )
        extra = dict(round=int(rnd) + 1, estimated_change=m, cumulative_estimate=cum)
        for i in members:
            rows.append(_report_row(table, int(job.train[i]), step, unit, why, extra))
    removed = sorted(r["row"] for r in rows)
    keep = np.setdiff1d(np.arange(len(job.y)), np.searchsorted(job.train, removed))
    before = _refit_metric(job, np.arange(len(job.y)))
    after = _refit_metric(job, keep) if len(keep) else np.nan
    summary = dict(
        n_removed=len(removed),
        n_kept=len(table.df) - len(removed),
        target=gi.target_name_,
        before=before,
        estimated_change=est[-1] if len(est) else 0.0,
        measured_change=after - before,
    )
    return table, pd.DataFrame(rows), removed, summary
