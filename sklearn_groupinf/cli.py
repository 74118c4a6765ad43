"""``groupinf`` command line (CSV in, report out)."""

import argparse
import sys


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="groupinf",
        description="Interaction-aware group influence for scikit-learn models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="run the main job on bundled data (digits classes as groups)",
        description="Group influence of digit classes on held-out log-loss: "
        "first-order vs interaction-aware vs actual refits.",
    )
    demo.add_argument("--n-refit", type=int, default=10,
                      help="number of groups checked by an actual refit (default 10)")
    return parser


def main(argv=None):
    """Entry point of the ``groupinf`` console script."""
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        run_demo(n_refit=args.n_refit)
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
