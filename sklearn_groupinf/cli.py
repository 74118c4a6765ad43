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
import math
import os
import re
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

Columns other than the label, the groups (unless --keep-groups-as-feature) and
--drop are features: numeric ones are median-imputed and standardised, the
others imputed with 'missing' and one-hot encoded (a non-numeric column with
more than --max-levels values, e.g. an id, is refused); the final linear
model's influence is computed. Several --groups columns: their combination
is the group. The report (stdout, and --out) is sorted by the --method
estimate, largest first; without --refit the estimates are not verified.
"""

_CLEAN_EXAMPLE = """\
example:
  groupinf clean loans.csv --label default --budget 0.05 --out cleaned.csv
  groupinf clean loans.csv --label default --groups annotator --budget 2 \\
      --validation holdout.csv --out cleaned.csv --report removed.csv

Without --validation, the rows are chosen by sklearn_groupinf.GroupSelector with
its defaults (no trusted labels needed: rows are scored against the labels of
the other rows); --method, --validation-fraction, --damping and --n-rounds
override them only when given. With --validation FILE.csv (trusted labels) the
rows are chosen to lower the metric on that file, and the change measured by
refitting the whole pipeline on the kept rows is printed at the end.
cleaned.csv holds the header and the kept rows copied byte for byte from the
input (same columns, order and formatting; checked by parsing it again); the
report lists each removed row (0-based data row and 1-based file line) and why
it was chosen. Output files are written only if the whole command succeeds.
"""

_DEMO_EXAMPLE = """\
example:
  groupinf demo --n-refit 10 --plot demo.png
"""


def _add_data_options(p, command):
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
    p.add_argument(
        "--max-levels",
        type=int,
        metavar="N",
        help="most distinct values a non-numeric feature may have (one-hot "
        "encoding adds one parameter per value); default: half the rows, at "
        "least 20 and at most 1000",
    )
    val = p.add_mutually_exclusive_group()
    val.add_argument(
        "--validation",
        metavar="FILE.csv",
        help="separate CSV with the same columns (trusted labels); the "
        "target is the model's metric on it",
    )
    val.add_argument(
        "--validation-fraction",
        type=float,
        metavar="F",
        help=(
            "else hold out this fraction of DATA.csv "
            "(stratified for classifiers; default 0.2)"
            if command == "audit"
            else "else GroupSelector holds out this fraction of DATA.csv as "
            "its target rows (default: its own, cross-fitting)"
        ),
    )
    p.add_argument(
        "--method",
        choices=["auto", "interaction", "first_order", "second_order", "newton"],
        help="group estimator (default: the library's default "
        "estimator; interaction = first-order sum plus the pairwise term)",
    )
    p.add_argument(
        "--damping",
        type=float,
        metavar="L",
        help="Hessian damping per example (default: the library's)",
    )
    p.add_argument(
        "--random-state",
        type=int,
        default=0,
        metavar="N",
        help="seed of the validation split (and of GroupSelector's) (default 0)",
    )
    p.add_argument(
        "--quiet", action="store_true", help="no progress messages on stderr"
    )
    _add_threads_option(p)


def _add_keep_groups_option(p):
    p.add_argument(
        "--keep-groups-as-feature",
        action="store_true",
        help="also use the --groups column(s) as features (by default they "
        "are not features; the output says which columns are)",
    )


def _add_threads_option(p):
    p.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        metavar="N",
        help="BLAS threads for the linear algebra (default 1: the "
        "matrices are small, and extra threads only help large "
        "models on an idle machine; on a busy one they spin)",
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
    _add_data_options(audit, "audit")
    audit.add_argument(
        "--groups",
        required=True,
        nargs="+",
        metavar="COL",
        help="column(s) whose values define the groups (example: "
        "--groups source, or --groups site year for their combination); "
        "no missing values",
    )
    _add_keep_groups_option(audit)
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
        description="Choose rows (or whole groups) whose removal is estimated to "
        "lower the\nmetric (GroupSelector's defaults, or against --validation "
        "FILE.csv), and write\nthe rest.\n" + _SIGN,
    )
    _add_data_options(clean, "clean")
    clean.add_argument(
        "--groups",
        nargs="+",
        metavar="COL",
        help="remove whole groups defined by this column (or the combination "
        "of these columns) instead of single rows",
    )
    _add_keep_groups_option(clean)
    clean.add_argument(
        "--budget",
        required=True,
        metavar="B",
        help="number of rows/groups to remove (a whole number: 5 or 5.0), a "
        "fraction of them in (0, 1) (example: --budget 0.05), or auto "
        "(GroupSelector decides, where it supports it)",
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
        help="decrease (clean) or increase the validation metric (default "
        "decrease; increase selects against --validation FILE or a held-out "
        "--validation-fraction, default 0.2)",
    )
    clean.add_argument(
        "--n-rounds",
        type=int,
        metavar="R",
        help="adaptive rounds: remove budget/R, refit, recompute (default: "
        "the library's)",
    )
    clean.add_argument(
        "--stop-early",
        action="store_true",
        help="stop before the budget when no removal is estimated to help",
    )
    return parser


# library parameter -> command-line option, so messages name the options
_FLAGS = dict(
    damping="--damping",
    method="--method",
    budget="--budget",
    n_rounds="--n-rounds",
    stop_early="--stop-early",
    validation="--validation-fraction",
    groups="--groups",
    C="--C",
    alpha="--alpha",
)
_PARAM = re.compile(
    r"(?<![\w.-])(%s)(=|>=|<=|>|<)('?)([^\s,;:)'(]*)\3" % "|".join(_FLAGS)
)
_QUOTED = re.compile(r"The '(%s)' parameter" % "|".join(_FLAGS))


def _flag_for(match):
    param, op, _, value = match.groups()
    return f"{_FLAGS[param]} {value}" if op == "=" else f"{_FLAGS[param]} {op} {value}"


def cli_message(text):
    """One line, library parameter names replaced by the options setting them."""
    text = " ".join(str(text).split())
    text = _PARAM.sub(_flag_for, text)
    text = text.replace(
        "refitting (sklearn_groupinf.evaluation.leave_group_out)",
        "refitting (--refit N)",
    )
    return _QUOTED.sub(lambda m: f"The option {_FLAGS[m.group(1)]}", text)


_SHOWN = set()


def _one_line_warnings(message, category, filename, lineno, file=None, line=None):
    text = cli_message(message)
    key = (category, re.sub(r"[-+.\de]+", "#", text))  # same but for numbers
    if key not in _SHOWN:
        _SHOWN.add(key)
        print(f"groupinf: warning: {text}", file=sys.stderr, flush=True)


def check_options(args):
    """Reject out-of-range numeric options before any file is read."""
    from ._tabular import InputError

    def bad(option, value, rule):
        raise InputError(f"{option} must be {rule}; got {value}")

    if args.blas_threads < 1:
        bad("--blas-threads", args.blas_threads, ">= 1")
    if args.command == "demo":
        return
    if not 0 < args.C <= math.inf:  # inf: no penalty
        bad("--C", args.C, "> 0 (inf: no penalty)")
    if not 0 <= args.alpha < math.inf:
        bad("--alpha", args.alpha, "finite and >= 0")
    if args.damping is not None and not 0 <= args.damping < math.inf:
        bad("--damping", args.damping, "finite and >= 0")
    f = args.validation_fraction
    if f is not None and not 0 < f < 1:
        bad("--validation-fraction", f, "in (0, 1)")
    if args.max_levels is not None and args.max_levels < 1:
        bad("--max-levels", args.max_levels, ">= 1")
    if args.groups:
        args.groups = list(dict.fromkeys(args.groups))  # each column once
    elif args.keep_groups_as_feature:
        raise InputError("--keep-groups-as-feature needs --groups COL")


def main(argv=None):
    """Entry point of the ``groupinf`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warnings
    from ._tabular import InputError

    try:
        from threadpoolctl import threadpool_limits

        from ._cli_output import run

        check_options(args)
        with threadpool_limits(limits=args.blas_threads, user_api="blas"):
            return run(args)
    except InputError as exc:
        print(f"groupinf: error: {cli_message(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `groupinf audit ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("groupinf: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ArithmeticError, MemoryError) as exc:
        msg = cli_message(exc) or type(exc).__name__
        print(f"groupinf: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
