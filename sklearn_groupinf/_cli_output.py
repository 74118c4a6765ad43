"""Run a parsed ``groupinf`` command and print / write its results."""

import os
import sys

import numpy as np

from ._tabular import InputError


def _save_plot(display_factory, path):
    """Draw with the Agg backend and save to ``path``."""
    try:
        import matplotlib
    except ImportError:
        raise InputError(
            "--plot needs matplotlib; install it with "
            "pip install 'sklearn-groupinf[plot]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    display = display_factory()
    display.figure_.tight_layout()
    try:
        display.figure_.savefig(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot save plot {path!r}: {exc}") from None
    finally:
        plt.close(display.figure_)
    print(f"groupinf: wrote plot {path}", file=sys.stderr)


def _format_table(frame, columns):
    cells = [[str(c) for c in columns]]
    for _, row in frame.iterrows():
        line = []
        for c in columns:
            v = row[c]
            if isinstance(v, (float, np.floating)):
                line.append("" if np.isnan(v) else f"{v:.5g}")
            else:
                line.append(str(v))
        cells.append(line)
    widths = [max(len(r[j]) for r in cells) for j in range(len(columns))]
    lines = [" ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _write_csv(frame, path, *, what):
    try:
        frame.to_csv(path, index=False)
    except OSError as exc:
        raise InputError(f"cannot write {what} {path!r}: {exc.strerror}") from None
    print(f"groupinf: wrote {what} {path}", file=sys.stderr)


def run_demo(args):
    from ._demo import run_demo

    if args.n_refit < 0:
        raise InputError(f"--n-refit must be >= 0; got {args.n_refit}")
    rows = run_demo(n_refit=args.n_refit)
    if args.plot:
        from .plotting import GroupInfluenceDisplay

        _save_plot(
            lambda: GroupInfluenceDisplay(
                groups=np.array([r["group"] for r in rows]),
                first_order=np.array([r["first_order"] for r in rows]),
                estimate=np.array([r["interaction"] for r in rows]),
                actual=np.array([r["actual"] for r in rows]),
                method="interaction",
                target_name="log_loss",
            ).plot(),
            args.plot,
        )
    return 0


def run_audit(args):
    from ._commands import _check_distinct, audit

    _check_distinct(args.data, args.out, args.plot)
    if args.validation:
        _check_distinct(args.validation, args.out, args.plot)
    if args.refit < 0 or args.top < 1:
        raise InputError("--refit must be >= 0 and --top >= 1")
    job, report = audit(args)
    from ._commands import _sign_note

    print(f"# {len(report)} groups of {args.groups!r}; {_sign_note(job.gi)}")
    cols = [c for c in report.columns]
    shown = report.head(args.top)
    print(_format_table(shown, cols))
    if len(report) > args.top:
        print(f"... {len(report) - args.top} more groups (see --out)")
    if "actual" in report:
        done = report.dropna(subset=["actual"])
        for m in [
            c
            for c in cols
            if c in ("first_order", "interaction", "second_order", "newton")
        ]:
            err = np.median(
                np.abs(done[m] - done["actual"])
                / np.maximum(np.abs(done["actual"]), 1e-12)
            )
            print(
                f"# median relative error of {m} against {len(done)} refits: {err:.3f}"
            )
    if args.out:
        _write_csv(report, args.out, what="report")
    if args.plot:
        from .plotting import GroupInfluenceDisplay

        top = report.head(args.top)
        _save_plot(
            lambda: GroupInfluenceDisplay(
                groups=top["group"].to_numpy(),
                first_order=top["first_order"].to_numpy(),
                estimate=top[args.method].to_numpy(),
                actual=top["actual"].to_numpy() if "actual" in top else None,
                method=args.method,
                target_name=job.gi.target_name_,
            ).plot(),
            args.plot,
        )
    return 0


def run_clean(args):
    from ._commands import clean

    if args.n_rounds < 1:
        raise InputError(f"--n-rounds must be >= 1; got {args.n_rounds}")
    if args.report is None:
        stem, _ = os.path.splitext(args.out)
        args.report = stem + "_removed.csv"
    if os.path.abspath(args.report) == os.path.abspath(args.out):
        raise InputError("--report and --out must be different files")
    job, report, s = clean(args)
    unit = "rows" if args.groups is None else "rows in groups"
    print(
        f"# removed {s['n_removed']} {unit}, kept {s['n_kept']} of "
        f"{len(job.df)}; validation {s['target']}: {s['before']:.6g} before"
    )
    print(
        f"# estimated change {s['estimated_change']:+.6g}; measured by refitting "
        f"without them {s['measured_change']:+.6g}"
    )
    table = report.drop(columns=["why"]) if len(report) else report
    if len(report) and args.groups is not None:
        table = (
            table.groupby(["step", "round", "group"], sort=False)
            .agg(
                size=("row", "size"),
                estimated_change=("estimated_change", "first"),
                cumulative_estimate=("cumulative_estimate", "first"),
            )
            .reset_index()
        )
    if len(table):
        print(_format_table(table.head(20), list(table.columns)))
        if len(table) > 20:
            print(f"... {len(table) - 20} more (see {args.report})")
    print(
        f"groupinf: wrote {args.out} ({s['n_kept']} rows, {s['bytes']} bytes)",
        file=sys.stderr,
    )
    _write_csv(report, args.report, what="report")
    return 0


def run(args):
    """Dispatch on ``args.command``; returns the exit status."""
    return {"demo": run_demo, "audit": run_audit, "clean": run_clean}[args.command](
        args
    )
