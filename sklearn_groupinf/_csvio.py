"""CSV files in and out for the ``groupinf`` command line.

A CSV is read twice: with pandas (the values the model sees) and as raw bytes
split into records, so that ``groupinf clean`` can copy the kept rows byte for
byte. The raw split is checked against pandas when the file is read, and every
file ``clean`` writes is parsed again and compared with the kept rows, so a
file whose records the two readers delimit differently is refused (exit
status 2) instead of being copied wrongly. Output files are checked before any
computation and written all or nothing (temporary files, renamed at the end).
Every problem with the user's files raises :class:`InputError`, which the
command line turns into a one-line message and exit status 2.
"""

import io
import os
import tempfile

import numpy as np


class InputError(ValueError):
    """The user's data or options cannot be used (exit status 2, no traceback)."""


# ----------------------------------------------------------------- reading
def _split_records(data):
    """Byte spans ``(start, end)`` and first line numbers of the CSV records.

    A record ends at a newline outside double quotes and includes its line
    terminator; quoted fields may contain newlines. Works line by line (an odd
    number of ``"`` on a line toggles the quote state; ``""`` escapes count
    twice), so large files are split at C speed. A ``"`` inside an unquoted
    field (``a"b``) fools this rule; :func:`read_csv` detects such files.

    Returns
    -------
    spans : list of (int, int)
    lines : list of int
        1-based line number on which each record starts.
    """
    spans, lines = [], []
    start = pos = 0
    line_no, first_line, quoted = 1, 1, False
    for piece in data.split(b"\n"):
        pos += len(piece) + 1
        if piece.count(b'"') % 2:
            quoted = not quoted
        if not quoted:
            end = min(pos, len(data))
            if end > start:
                spans.append((start, end))
                lines.append(first_line)
            start, first_line = end, line_no + 1
        line_no += 1
    if start < len(data):
        spans.append((start, len(data)))
        lines.append(first_line)
    return spans, lines


def _parse_strings(data):
    """Every cell as the exact string pandas reads (no type or NA inference)."""
    import pandas as pd

    return pd.read_csv(
        io.BytesIO(data), dtype=str, keep_default_na=False, na_filter=False
    )


class RawCSV:
    """The bytes of a CSV file and the span of each data row.

    Parameters
    ----------
    path : str
        CSV file with a header line.
    data : bytes
        The file's content.
    """

    def __init__(self, path, data):
        self.path = path
        self.data = data
        spans, lines = _split_records(data)
        keep = [k for k, (a, b) in enumerate(spans) if data[a:b].strip()]
        self.header_span = spans[keep[0]] if keep else None
        self.row_spans = [spans[k] for k in keep[1:]]
        # 1-based line number on which each data row starts
        self.row_lines = [lines[k] for k in keep[1:]]
        self._strings = None

    @property
    def strings(self):
        """The data rows as pandas reads them, every cell a string."""
        if self._strings is None:
            self._strings = _parse_strings(self.data)
        return self._strings

    def without(self, rows):
        """The file's bytes minus the data rows ``rows`` (0-based)."""
        drop = {self.row_spans[r] for r in rows}
        pieces, pos = [], 0
        for span in self.row_spans:
            if span in drop:
                pieces.append(self.data[pos : span[0]])
                pos = span[1]
        pieces.append(self.data[pos:])
        return b"".join(pieces)

    def copies_exactly(self, rows, out=None):
        """Whether ``out`` (default: the file minus the data rows ``rows``)
        parses to exactly the other rows, cell for cell, as pandas reads them."""
        kept = np.setdiff1d(np.arange(len(self.row_spans)), np.asarray(rows, int))
        out = self.without(rows) if out is None else out
        expected = self.strings.iloc[kept].reset_index(drop=True)
        try:
            got = _parse_strings(out)
        except Exception:  # a copy that does not parse is wrong
            return False
        return got.shape == expected.shape and bool(
            (got.columns == expected.columns).all()
            and (got.to_numpy() == expected.to_numpy()).all()
        )


def unsplittable(what, path):
    return InputError(
        f"{what} {path!r} has a double quote inside an unquoted field (or other "
        "unusual quoting), so its rows cannot be copied byte for byte safely; "
        "save it as a standard CSV (fields with quotes enclosed in quotes, "
        'inner quotes doubled: "a ""b"" c") and run again'
    )


def read_csv(path, *, what="data file", copyable=False):
    """Read ``path`` with pandas and as raw records; check it is usable.

    ``copyable=True`` also checks that rows can be removed byte for byte
    (the raw records delimit the same rows as pandas).

    Returns
    -------
    df : pandas.DataFrame
    raw : RawCSV
    """
    import pandas as pd

    if not os.path.exists(path):
        raise InputError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise InputError(f"{what} {path!r} is a directory, not a CSV file")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path!r}: {exc.strerror}") from None
    if not data.strip():
        raise InputError(f"{what} {path!r} is empty")
    try:
        df = pd.read_csv(io.BytesIO(data))
    except pd.errors.EmptyDataError:
        raise InputError(f"{what} {path!r} is empty") from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} {path!r} is not UTF-8 text ({exc.reason} at byte "
            f"{exc.start}); save it as UTF-8 CSV"
        ) from None
    except (pd.errors.ParserError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc)
        raise InputError(f"cannot parse {what} {path!r} as CSV: {msg}") from None
    if len(df) == 0:
        raise InputError(f"{what} {path!r} has a header but no data rows")
    for sep in (";", "\t", "|"):
        if df.shape[1] == 1 and sep in str(df.columns[0]):
            raise InputError(
                f"{what} {path!r} has a single column {df.columns[0]!r}: it seems "
                f"to be separated by {sep!r}; save it comma-separated"
            )
    raw = RawCSV(path, data)
    if len(raw.row_spans) != len(df):
        raise InputError(
            f"{what} {path!r}: found {len(raw.row_spans)} records but pandas read "
            f"{len(df)} rows (unusual quoting or line endings); save it as a "
            "standard comma-separated file"
        )
    if copyable:
        rows = np.arange(len(df))
        # dropping the odd, then the even rows moves every record boundary
        if not (raw.copies_exactly(rows[1::2]) and raw.copies_exactly(rows[::2])):
            raise unsplittable(what, path)
    return df, raw


# ---------------------------------------------------------------- writing
_PLOT_FORMATS = {"png", "pdf", "svg", "svgz", "jpg", "jpeg", "eps", "ps", "tif"}
_PLOT_FORMATS |= {"tiff", "webp", "pgf", "raw", "rgba"}


def check_output(path, *, option, inputs=(), plot=False):
    """Raise :class:`InputError` now if ``path`` cannot be written later."""
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise InputError(f"{option} {path!r} is a directory; give a file name")
    parent = os.path.dirname(full)
    if not os.path.isdir(parent):
        raise InputError(
            f"{option} {path!r}: directory {parent!r} does not exist; create it "
            "or choose another path"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path!r}: directory {parent!r} is not writable")
    if os.path.exists(full) and not os.access(full, os.W_OK):
        raise InputError(f"{option} {path!r} exists and is not writable")
    for other in inputs:
        if other and os.path.exists(other) and os.path.exists(full):
            if os.path.samefile(full, other):
                raise InputError(
                    f"{option} {path!r} is the input file {other!r}; the input "
                    "is never overwritten, choose another name"
                )
    if plot:
        ext = os.path.splitext(path)[1].lower().lstrip(".")
        if ext not in _PLOT_FORMATS:
            raise InputError(
                f"{option} {path!r}: unknown image format {ext or '(none)'!r}; "
                "end the name with .png, .pdf or .svg"
            )


def check_distinct(named):
    """``named``: ``{option: path}``; two options may not name one file."""
    seen = {}
    for option, path in named.items():
        if path is None:
            continue
        key = os.path.abspath(path)
        if key in seen:
            raise InputError(
                f"{seen[key]} and {option} name the same file {path!r}; "
                "choose different names"
            )
        seen[key] = option


def _file_mode(path):
    """The mode ``open(path, "w")`` would give: the existing file's, else
    0666 minus the umask."""
    if os.path.exists(path):
        return os.stat(path).st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class Outputs:
    """Write several output files all or nothing.

    ``stage`` writes each file to a temporary file beside its destination;
    ``commit`` renames them all into place. Used as a context manager, any
    error before ``commit`` removes the temporary files and leaves every
    destination as it was.
    """

    def __init__(self):
        self._staged = []

    def stage(self, path, write, *, what):
        """Call ``write(tmp_path)``; returns the temporary path."""
        full = os.path.abspath(path)
        stem, ext = os.path.splitext(os.path.basename(full))
        fd, tmp = tempfile.mkstemp(
            dir=os.path.dirname(full), prefix=f".{stem}.", suffix=f".tmp{ext}"
        )
        os.close(fd)
        self._staged.append((tmp, full, what))
        os.chmod(tmp, _file_mode(full))  # mkstemp's files are private (0600)
        try:
            write(tmp)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise InputError(f"cannot write {what} {path!r}: {reason}") from None
        return tmp

    def commit(self):
        """Move every staged file into place; returns ``[(what, path), ...]``."""
        done = []
        for tmp, full, what in self._staged:
            os.replace(tmp, full)
            done.append((what, full))
        self._staged = []
        return done

    def discard(self):
        for tmp, _, _ in self._staged:
            if os.path.exists(tmp):
                os.remove(tmp)
        self._staged = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.discard()
        return False
