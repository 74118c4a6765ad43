"""``python -m sklearn_groupinf``: the ``groupinf`` command line."""

from .cli import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
