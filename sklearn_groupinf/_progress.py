"""Progress reporting for long computations (tqdm when installed, else stderr)."""

import sys
import time


def progress(iterable, *, verbose=0, desc="", total=None):
    """Wrap ``iterable`` to report progress on stderr when ``verbose > 0``.

    Uses ``tqdm`` when it is installed; otherwise prints a line roughly every
    10 % of ``total`` (when known). With ``verbose=0`` it returns ``iterable``
    unchanged, at no cost.
    """
    if not verbose:
        return iterable
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _plain_progress(iterable, desc=desc, total=total)
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False)


def _plain_progress(iterable, *, desc, total):
    start = time.perf_counter()
    step = max(1, (total or 10) // 10)
    for i, item in enumerate(iterable, 1):
        yield item
        if i % step == 0 or i == total:
            of = f"/{total}" if total else ""
            print(
                f"{desc}: {i}{of} ({time.perf_counter() - start:.1f} s)",
                file=sys.stderr,
                flush=True,
            )


def log(message, *, verbose=0):
    """Print ``message`` to stderr when ``verbose > 0``."""
    if verbose:
        print(message, file=sys.stderr, flush=True)
