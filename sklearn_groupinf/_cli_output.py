"""Run a parsed ``groupinf`` command and print / write its results.

Results go to stdout; progress and "wrote ..." messages to stderr unless
``--quiet``. Output paths are checked before any computation, and the files
of one command are written all or nothing.
"""

import sys

import numpy as np

from ._csvio import (
    InputError,
    Outputs,
    check_distinct,
    check_output,
    unsplittable,
)

ESTIMATORS = ("first_order", "interaction", "second_order", "newton")


def _say(args, message):
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def _check_plotting(path):
    if path is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError(
            "--plot needs matplotlib; install it with "
            "pip install 'sklearn-groupinf[plot]'"
        ) from None


def _plot_writer(display_factory):
    """A ``write(path)`` drawing with the Agg backend."""

    def write(path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        display = display_factory()
        display.figure_.tight_layout()
        try:
            display.figure_.savefig(path)
        except ValueError as exc:
            raise InputError(f"cannot save the plot: {exc}") from None
        finally:
            plt.close(display.figure_)

    return write


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


def _check_outputs(args, named, plot=None):
    """Check every output path of the command before computing anything."""
    inputs = (args.data, getattr(args, "validation", None))
    check_distinct(named)
    for option, path in named.items():
        if path is not None:
            check_output(path, option=option, inputs=inputs, plot=option == "--plot")
    _check_plotting(plot)


def run_demo(args):
    from ._demo import run_demo

    if args.n_refit < 0:
        raise InputError(f"--n-refit must be >= 0; got {args.n_refit}")
    if args.plot:
        check_output(args.plot, option="--plot", plot=True)
        _check_plotting(args.plot)
    rows = run_demo(n_refit=args.n_refit)
    if args.plot:
        from .plotting import GroupInfluenceDisplay

        write = _plot_writer(
            lambda: GroupInfluenceDisplay(
                groups=np.array([r["group"] for r in rows]),
                first_order=np.array([r["first_order"] for r in rows]),
                estimate=np.array([r["interaction"] for r in rows]),
                actual=np.array([r["actual"] for r in rows]),
                method="interaction",
                target_name="log_loss",
            ).plot()
        )
        with Outputs() as outputs:
            outputs.stage(args.plot, write, what="plot")
            outputs.commit()
        _say(args, f"groupinf: wrote plot {args.plot}")
    return 0


def run_audit(args):
    from ._commands import audit, sign_note

    if args.refit < 0 or args.top < 1:
        raise InputError("--refit must be >= 0 and --top >= 1")
    _check_outputs(args, {"--out": args.out, "--plot": args.plot}, args.plot)
    job, method, report = audit(args)
    print(job.table.describe(args))
    groups = ", ".join(repr(c) for c in args.groups)
    print(f"# {len(report)} groups of {groups}; {sign_note(job.gi)}")
    cols = list(report.columns)
    print(_format_table(report.head(args.top), cols))
    if len(report) > args.top:
        print(f"... {len(report) - args.top} more groups (see --out)")
    if "reliable" in report:
        n_bad = int((~report["reliable"].astype(bool)).sum())
        print(
            f"# reliable: {len(report) - n_bad} of {len(report)} {method} "
            "estimates pass the library's trust check (no refit)"
            + (f"; check the {n_bad} others with --refit" if n_bad else "")
        )
    if "actual" in report:
        done = report.dropna(subset=["actual"])
        for m in [c for c in cols if c in ESTIMATORS]:
            err = np.median(
                np.abs(done[m] - done["actual"])
                / np.maximum(np.abs(done["actual"]), 1e-12)
            )
            print(
                f"# median relative error of {m} against {len(done)} refits: {err:.3f}"
            )
    else:
        print(
            "# estimates are not verified: --refit N refits the model without "
            "each of the N groups with the largest |estimate| and adds the "
            "measured change (column actual)"
        )
    with Outputs() as outputs:
        if args.out:
            outputs.stage(
                args.out, lambda p: report.to_csv(p, index=False), what="report"
            )
        if args.plot:
            from .plotting import GroupInfluenceDisplay

            top = report.head(args.top)
            write = _plot_writer(
                lambda: GroupInfluenceDisplay(
                    groups=top["group"].to_numpy(),
                    first_order=top["first_order"].to_numpy(),
                    estimate=top[method].to_numpy(),
                    actual=top["actual"].to_numpy() if "actual" in top else None,
                    method=method,
                    target_name=job.gi.target_name_,
                ).plot()
            )
            outputs.stage(args.plot, write, what="plot")
        for what, path in outputs.commit():
            _say(args, f"groupinf: wrote {what} {path}")
    return 0


def _print_clean_summary(args, table, report, s):
    unit = "rows" if args.groups is None else "rows in groups"
    print(table.describe(args))
    head = f"# removed {s['n_removed']} {unit}, kept {s['n_kept']} of {len(table.df)}"
    if "before" in s:
        print(f"{head}; validation {s['target']}: {s['before']:.6g} before")
        print(
            f"# estimated change {s['estimated_change']:+.6g}; measured by "
            f"refitting without them {s['measured_change']:+.6g}"
        )
    else:
        print("\n# ".join([head, *s["how"]]))
    table_ = report.drop(columns=["why"]) if len(report) else report
    if len(report) and args.groups is not None:
        agg = dict(size=("row", "size"))
        for c in ("round", "estimated_change", "cumulative_estimate"):
            if c in table_:
                agg[c] = (c, "first")
        table_ = table_.groupby(["step", "group"], sort=False).agg(**agg)
        table_ = table_.reset_index()
    if len(table_):
        print(_format_table(table_.head(20), list(table_.columns)))
        if len(table_) > 20:
            print(f"... {len(table_) - 20} more (see {args.report})")


def run_clean(args):
    import os

    from ._clean_command import clean, parse_budget

    if args.n_rounds is not None and args.n_rounds < 1:
        raise InputError(f"--n-rounds must be >= 1; got {args.n_rounds}")
    parse_budget(args.budget)  # a bad budget fails before any reading
    if args.report is None:
        stem, _ = os.path.splitext(args.out)
        args.report = stem + "_removed.csv"
    _check_outputs(args, {"--out": args.out, "--report": args.report})
    table, report, removed, s = clean(args)
    _print_clean_summary(args, table, report, s)
    with Outputs() as outputs:
        data = table.raw.without(removed)

        def write_rows(path):
            with open(path, "wb") as fh:
                fh.write(data)
            with open(path, "rb") as fh:  # every copied record, parsed again
                if not table.raw.copies_exactly(removed, fh.read()):
                    raise unsplittable("data file", args.data)

        outputs.stage(args.out, write_rows, what="kept rows")
        outputs.stage(
            args.report, lambda p: report.to_csv(p, index=False), what="report"
        )
        outputs.commit()
    _say(args, f"groupinf: wrote {args.out} ({s['n_kept']} rows, {len(data)} bytes)")
    _say(args, f"groupinf: wrote report {args.report}")
    return 0


def run(args):
    """Dispatch on ``args.command``; returns the exit status."""
    runner = {"demo": run_demo, "audit": run_audit, "clean": run_clean}
    return runner[args.command](args)
