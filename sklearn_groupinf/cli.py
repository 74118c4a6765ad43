"""``groupinf`` command line: CSV in, report out.

``groupinf demo`` runs the main job on bundled data; ``groupinf audit`` scores
the groups of a CSV file; ``groupinf clean`` removes the rows (or groups) whose
removal is estimated to lower the validation loss and writes the kept rows
byte for byte. Every score is the estimated change of the target (the model's
usual metric on the validation rows, in its units) when the group or row is
removed; positive means removing it raises the loss.

Bad input (missing file or column, empty file, one-class label, ...) gives a
one-line error on stderr and exit status 2; the input file is never modified.
"""

import argparse
import os
import sys
import warnings

_FMT = argparse.RawDescriptionHelpFormatter

_SIGN = (
    "Every score is the estimated change of the target (the model's usual "
    "metric on the\nvalidation rows: log-loss, squared error or deviance, in "
    "its units) when the group\nor row is removed; positive = removing it "
    "raises the loss (the data helps)."
)

_AUDIT_EXAMPLE = """\
example:
  groupinf audit loans.csv --label default --groups branch \\
      --validation-fraction 0.25 --refit 5 --out report.csv --plot report.png

Columns other than the label, the groups and --drop are features: numeric ones
are median-imputed and standardised, the others imputed with 'missing' and
one-hot encoded; the final linear model's influence is computed.
The report (stdout, and --out) is sorted by the --method estimate, largest first.
"""

_CLEAN_EXAMPLE = """\
example:
  groupinf clean loans.csv --label default --budget 0.05 --out cleaned.csv
  groupinf clean loans.csv --label default --groups annotator --budget 2 \\
      --validation holdout.csv --out cleaned.csv --report removed.csv

cleaned.csv holds the header and the kept rows copied byte for byte from the
input (same columns, order and formatting); the report lists each removed row
(0-based data row and 1-based file line), its step and the estimated change of
the validation metric that made it be chosen. Validation rows are never removed.
The measured change printed at the end refits the whole pipeline on the kept
rows, as you would on cleaned.csv.
"""

_DEMO_EXAMPLE = """\
example:
  groupinf demo --n-refit 10 --plot demo.png
"""


def _add_data_options(p):
    p.add_argument(
        "data",
        metavar="DATA.csv",
        help="training data, a CSV file with a header line (never modified)",
    )
    p.add_argument(
        "--label",
        required=True,
        metavar="COL",
        help="column to predict (example: --label default)",
    )
    p.add_argument(
        "--model",
        default="auto",
        choices=["auto", "logistic", "ridge", "linear", "poisson", "gamma"],
        help="final model; auto = logistic for a non-numeric label or "
        "one with at most 10 integer values, else ridge (default auto)",
    )
    p.add_argument(
        "--C",
        type=float,
        default=1.0,
        metavar="C",
        help="inverse L2 strength of --model logistic (default 1.0)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=1.0,
        metavar="A",
        help="L2 strength of ridge/poisson/gamma (default 1.0)",
    )
    p.add_argument(
        "--drop",
        nargs="+",
        default=[],
        metavar="COL",
        help="columns that are not features, e.g. ids: --drop id name",
    )
    val = p.add_mutually_exclusive_group()
    val.add_argument(
        "--validation",
        metavar="FILE.csv",
        help="separate CSV with the same columns; the target is the "
        "model's metric on it",
    )
    val.add_argument(
        "--validation-fraction",
        type=float,
        default=0.2,
        metavar="F",
        help="else hold out this fraction of DATA.csv "
        "(stratified for classifiers; default 0.2)",
    )
    p.add_argument(
        "--method",
        default="interaction",
        choices=["interaction", "first_order", "second_order", "newton"],
        help="group estimator (default interaction: first-order sum "
        "plus the pairwise interaction term)",
    )
    p.add_argument(
        "--damping",
        type=float,
        default=0.0,
        metavar="L",
        help="Hessian damping per example (default 0)",
    )
    p.add_argument(
        "--random-state",
        type=int,
        default=0,
        metavar="N",
        help="seed of the validation split (default 0)",
    )
    p.add_argument(
        "--quiet", action="store_true", help="no progress messages on stderr"
    )
    _add_threads_option(p)


def _add_threads_option(p):
    p.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        metavar="N",
        help="BLAS threads for the linear algebra (default 1: the "
        "matrices are small, and extra threads only help large "
        "models on an idle machine; on a busy one they slowed the "
        "demo 30x)",
    )


def build_parser():
    """The ``argparse`` parser of the ``groupinf`` command."""
    parser = argparse.ArgumentParser(
        prog="groupinf",
        formatter_class=_FMT,
        description="Interaction-aware group influence for scikit-learn models.\n"
        + _SIGN,
        epilog="examples:\n  groupinf demo\n  groupinf audit data.csv --label y "
        "--groups source\n  groupinf clean data.csv --label y --budget 20 --out "
        "cleaned.csv\n\nRun 'groupinf COMMAND --help' for the options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        formatter_class=_FMT,
        epilog=_DEMO_EXAMPLE,
        help="run the main job on bundled data (digits classes as groups)",
        description="Group influence of digit classes on held-out log-loss: "
        "first-order vs\ninteraction-aware vs actual refits (bundled data, "
        "offline, seconds).",
    )
    demo.add_argument(
        "--n-refit",
        type=int,
        default=10,
        metavar="N",
        help="number of groups checked by an actual refit (default 10)",
    )
    demo.add_argument(
        "--plot",
        metavar="FILE",
        help="also save a bar chart of the estimates (png, pdf, svg; needs matplotlib)",
    )
    _add_threads_option(demo)
    audit = sub.add_parser(
        "audit",
        formatter_class=_FMT,
        epilog=_AUDIT_EXAMPLE,
        help="estimated effect of each group of rows of a CSV file",
        description="Fit a tabular pipeline and estimate, for each group, the "
        "change of the\nvalidation metric when the group's rows are removed.\n" + _SIGN,
    )
    _add_data_options(audit)
    audit.add_argument(
        "--groups",
        required=True,
        metavar="COL",
        help="column whose values define the groups (example: "
        "--groups source); no missing values",
    )
    audit.add_argument(
        "--refit",
        type=int,
        default=0,
        metavar="N",
        help="also refit the model without each of the N groups "
        "with the largest |estimate| (features kept as fitted, "
        "as the estimates assume) and report the actual change "
        "(default 0)",
    )
    audit.add_argument("--out", metavar="FILE.csv", help="write the full report as CSV")
    audit.add_argument(
        "--plot",
        metavar="FILE",
        help="save a bar chart of the estimates (needs matplotlib)",
    )
    audit.add_argument(
        "--top",
        type=int,
        default=20,
        metavar="N",
        help="rows printed and groups plotted (default 20)",
    )
    clean = sub.add_parser(
        "clean",
        formatter_class=_FMT,
        epilog=_CLEAN_EXAMPLE,
        help="remove the rows (or groups) that hurt the validation metric",
        description="Greedily choose rows (or whole groups) whose joint removal "
        "is estimated\nto lower the validation metric (interaction-aware), and "
        "write the rest.\n" + _SIGN,
    )
    _add_data_options(clean)
    clean.add_argument(
        "--groups",
        metavar="COL",
        help="remove whole groups defined by this column instead of single rows",
    )
    clean.add_argument(
        "--budget",
        required=True,
        metavar="B",
        help="number of rows/groups to remove, or a fraction of "
        "them in (0, 1] (example: --budget 0.05)",
    )
    clean.add_argument(
        "--out", required=True, metavar="FILE.csv", help="where to write the kept rows"
    )
    clean.add_argument(
        "--report",
        metavar="FILE.csv",
        help="where to write the removed rows and why (default: "
        "OUT with suffix _removed.csv)",
    )
    clean.add_argument(
        "--goal",
        default="decrease",
        choices=["decrease", "increase"],
        help="decrease (clean) or increase the validation metric (default decrease)",
    )
    clean.add_argument(
        "--n-rounds",
        type=int,
        default=1,
        metavar="R",
        help="adaptive rounds: remove budget/R, refit, recompute (default 1)",
    )
    clean.add_argument(
        "--stop-early",
        action="store_true",
        help="stop before the budget when no removal is estimated to help",
    )
    return parser


def _one_line_warnings(message, category, filename, lineno, file=None, line=None):
    text = " ".join(str(message).split())
    print(f"groupinf: warning: {text}", file=sys.stderr, flush=True)


def main(argv=None):
    """Entry point of the ``groupinf`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warnings
    from ._tabular import InputError

    try:
        from threadpoolctl import threadpool_limits

        from ._cli_output import run

        if args.blas_threads < 1:
            raise InputError(f"--blas-threads must be >= 1; got {args.blas_threads}")
        with threadpool_limits(limits=args.blas_threads, user_api="blas"):
            return run(args)
    except InputError as exc:
        print(f"groupinf: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `groupinf audit ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("groupinf: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ArithmeticError) as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"groupinf: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
