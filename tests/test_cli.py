"""End-to-end tests of the ``groupinf`` command line on generated CSV files.

Each command runs in a subprocess (``python -m sklearn_groupinf``), as a user
would run it. Bad input must give a one-line error, exit status 2, no
traceback, and leave the input file unchanged.
"""

import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from sklearn_groupinf import GroupInfluence

# one BLAS thread: small matrices, and on a shared machine OpenBLAS threads
# spin (measured 100x slower Hessian products under load)
ENV = dict(
    os.environ,
    PYTHONWARNINGS="ignore::DeprecationWarning",
    OPENBLAS_NUM_THREADS="1",
    OMP_NUM_THREADS="1",
    MKL_NUM_THREADS="1",
)


def run_cli(*args):
    """Run ``python -m sklearn_groupinf ARGS``; returns the CompletedProcess."""
    return run_many([args])[0]


def start_cli(*args):
    """Start ``python -m sklearn_groupinf ARGS``; :func:`finish` waits for it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sklearn_groupinf", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    return args, proc


def finish(started):
    args, proc = started
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def run_many(arg_lists):
    """Run several commands concurrently (start-up dominates their time)."""
    return [finish(s) for s in [start_cli(*args) for args in arg_lists]]


def make_frame(n=240, seed=0):
    """Mixed-type data: numeric + categorical columns with missing values,
    a string label, a noisy source whose labels are mostly flipped."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "id": np.arange(n),
            "age": rng.normal(40, 10, n).round(1),
            "income": rng.lognormal(3, 1, n).round(2),
            "city": rng.choice(["Paris", "Lyon", "Nice, FR"], n),
            "source": rng.choice(list("ABCDE"), n),
        }
    )
    df.loc[rng.random(n) < 0.1, "age"] = np.nan
    df.loc[rng.random(n) < 0.1, "city"] = np.nan
    score = (df.age.fillna(40) - 40) / 8 + (df.city == "Paris")
    y = (score + rng.logistic(size=n) > 0).to_numpy().astype(int)
    noisy = (df.source == "E").to_numpy() & (rng.random(n) < 0.7)
    y[noisy] = 1 - y[noisy]
    df["label"] = np.where(y == 1, "yes", "no")
    df["amount"] = (2 * df.age.fillna(40) + rng.normal(0, 5, n)).round(3)
    return df


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "data.csv"
    make_frame().to_csv(path, index=False)
    return path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_help_documents_every_option_with_an_example(capsys):
    expected = [
        (
            "audit",
            [
                "--label",
                "--groups",
                "--model",
                "--validation",
                "--validation-fraction",
                "--method",
                "--out",
                "--plot",
                "--refit",
                "--drop",
                "--blas-threads",
                "--keep-groups-as-feature",
                "--max-levels",
            ],
        ),
        (
            "clean",
            [
                "--label",
                "--budget",
                "--out",
                "--report",
                "--groups",
                "--n-rounds",
                "--goal",
                "--keep-groups-as-feature",
                "GroupSelector",
            ],
        ),
        ("demo", ["--n-refit", "--plot", "--blas-threads"]),
    ]
    from sklearn_groupinf import cli

    for command, options in expected:
        with pytest.raises(SystemExit) as exit_:
            cli.main([command, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        for opt in options:
            assert opt in text
        assert "example:" in text
        assert f"groupinf {command}" in text


def test_audit_report_matches_library_and_refits(data_csv, tmp_path):
    before = digest(data_csv)
    out, png = tmp_path / "report.csv", tmp_path / "report.png"
    proc = run_cli(
        "audit",
        data_csv,
        "--label",
        "label",
        "--groups",
        "source",
        "--drop",
        "id",
        "--refit",
        "2",
        "--out",
        out,
        "--plot",
        png,
    )
    assert proc.returncode == 0, proc.stderr
    assert digest(data_csv) == before
    assert "Traceback" not in proc.stderr
    assert "groupinf: read" in proc.stderr  # progress on stderr
    report = pd.read_csv(out)
    # first_order and interaction, then the library's default estimator (when
    # another one) by which the report is sorted, the trust flag when the
    # library gives one, and the refits
    assert list(report.columns[:6]) == [
        "rank",
        "group",
        "size",
        "share",
        "first_order",
        "interaction",
    ]
    assert report.columns[-1] == "actual"
    default = GroupInfluence(None).method
    extra = [c for c in report.columns[6:-1] if c != "reliable"]
    assert extra == ([] if default == "interaction" else [extra[0]])
    sort_column = extra[0] if extra else "interaction"
    assert np.all(np.diff(report[sort_column]) <= 0)  # sorted, largest first
    assert sorted(report["group"]) == list("ABCDE")
    # the same numbers from the library on the same split and pipeline
    from sklearn.model_selection import train_test_split

    from sklearn_groupinf._tabular import as_categorical_safe, make_pipeline

    df = pd.read_csv(data_csv)
    y = df["label"].to_numpy()
    train, val = train_test_split(
        np.arange(len(df)), test_size=0.2, stratify=y, random_state=0
    )
    train, val = np.sort(train), np.sort(val)
    X = as_categorical_safe(df[["age", "income", "city", "amount"]])
    gi = GroupInfluence(make_pipeline(X.iloc[train], "logistic")).fit(
        X.iloc[train], y[train], X_target=X.iloc[val], y_target=y[val]
    )
    for method in ("interaction", sort_column):
        res = gi.score_groups(df["source"].to_numpy()[train], method=method)
        expected = dict(zip(res.groups, res.estimate))
        got = dict(zip(report["group"], report[method]))
        for g in expected:
            assert got[g] == pytest.approx(expected[g], rel=1e-6, abs=1e-12)
    assert dict(zip(report["group"], report["size"])) == dict(zip(res.groups, res.size))
    # the two largest |estimates| were refitted, and the estimate is close
    done = report.dropna(subset=["actual"])
    assert len(done) == 2
    np.testing.assert_allclose(done[sort_column], done["actual"], rtol=0.5)
    assert png.stat().st_size > 0


def test_clean_uses_group_selector_defaults(data_csv, tmp_path):
    """Without --validation, clean removes what GroupSelector with its own
    defaults removes (the CLI adds no method/validation default of its own);
    the kept rows are the input's bytes minus the reported rows."""
    from sklearn_groupinf import GroupSelector
    from sklearn_groupinf._tabular import as_categorical_safe, make_pipeline

    before = digest(data_csv)
    out = tmp_path / "cleaned.csv"
    started = start_cli(
        "clean",
        data_csv,
        "--label",
        "label",
        "--drop",
        "id",
        "--budget",
        "12.0",  # a whole-number float is a count
        "--out",
        out,
        "--quiet",
    )
    df = pd.read_csv(data_csv)
    X = as_categorical_safe(df[["age", "income", "city", "source", "amount"]])
    y = df["label"].to_numpy()
    expected = GroupSelector(make_pipeline(X, "logistic"), budget=12, random_state=0)
    expected.fit(X, y)  # meanwhile, the command runs
    proc = finish(started)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --quiet: nothing on stderr
    assert digest(data_csv) == before
    report = pd.read_csv(tmp_path / "cleaned_removed.csv")
    assert len(report) == 12 and report["step"].tolist() == list(range(1, 13))
    assert report["why"].str.contains("log_loss").all()
    # the features used are listed on stdout
    assert "# features (5): age, income, city, source, amount\n" in proc.stdout
    assert "GroupSelector(" in proc.stdout and "--validation FILE" in proc.stdout
    assert report["row"].tolist() == expected.removed_indices_.tolist()
    lines = data_csv.read_bytes().splitlines(keepends=True)
    kept_lines = [ln for k, ln in enumerate(lines, 1) if k not in set(report["line"])]
    assert out.read_bytes().splitlines(keepends=True) == kept_lines
    # the reported rows are the ones pandas sees at those positions
    assert (df["label"].iloc[report["row"]].to_numpy() == report["label"]).all()
    kept = pd.read_csv(out)
    assert list(kept.columns) == list(df.columns)
    assert len(kept) == len(df) - 12


def test_clean_groups_with_validation_file_quoted_multiline(tmp_path):
    df = make_frame(n=200, seed=1)
    df["note"] = [
        'line one\nline two, "quoted"' if i % 17 == 0 else "plain"
        for i in range(len(df))
    ]
    data, val = tmp_path / "data.csv", tmp_path / "val.csv"
    df.iloc[:150].to_csv(data, index=False)
    df.iloc[150:].to_csv(val, index=False)
    before = digest(data)
    out, rep = tmp_path / "kept.csv", tmp_path / "removed.csv"
    proc = run_cli(
        "clean",
        data,
        "--label",
        "amount",
        "--model",
        "ridge",
        "--groups",
        "source",
        "--drop",
        "id",
        "note",
        "--validation",
        val,
        "--budget",
        "1",
        "--out",
        out,
        "--report",
        rep,
    )
    assert proc.returncode == 0, proc.stderr
    assert digest(data) == before
    report = pd.read_csv(rep)
    assert report["group"].nunique() == 1
    group = report["group"].iloc[0]
    original = pd.read_csv(data)
    assert sorted(report["row"]) == np.flatnonzero(original["source"] == group).tolist()
    kept = pd.read_csv(out)
    pd.testing.assert_frame_equal(
        kept, original[original["source"] != group].reset_index(drop=True)
    )
    assert "mean_squared_error" in proc.stdout
    assert "measured by refitting" in proc.stdout


def write_stray_quote_csv(path, n=60):
    """Rows whose last two records a line-based splitter misreads while the
    record count still matches pandas' (a ``"`` inside an unquoted field,
    then a quoted field with a newline); column ``half`` alternates 0/1."""
    lines = make_frame(n=n).to_csv(index=False).splitlines()
    notes = ["plain"] * (n - 2) + ['x"y', '"p\nq"']
    body = [f"{ln},{i % 2},{notes[i]}" for i, ln in enumerate(lines[1:])]
    path.write_bytes("\n".join([lines[0] + ",half,note", *body, ""]).encode())


def test_audit_quiet_unverified_and_cli_flag_names(data_csv, tmp_path):
    """--quiet prints nothing on stderr; without --refit the output says the
    estimates are unverified and how to verify them; with --C inf any advice
    about damping names the --damping option."""
    before = digest(data_csv)
    out = tmp_path / "r.csv"
    base = ["audit", data_csv, "--label", "label", "--groups", "source"]
    quiet, unpenalised = run_many(
        [
            base + ["--drop", "id", "--quiet", "--out", out],
            base + ["--drop", "id", "--C", "inf"],
        ]
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert "estimates are not verified: --refit N" in quiet.stdout
    assert len(pd.read_csv(out)) == 5
    assert unpenalised.returncode in (0, 2), unpenalised.stderr
    assert "Traceback" not in unpenalised.stderr
    assert re.search(r"(?<!--)\bdamping", unpenalised.stderr) is None
    assert digest(data_csv) == before


@pytest.mark.filterwarnings("ignore:.*flagged as unreliable")
def test_audit_groups_combination_and_keep_groups_as_feature(tmp_path):
    """Several --groups columns: their combination is the group; the groups
    columns are features only with --keep-groups-as-feature, and the output
    says which columns are features."""
    from sklearn.model_selection import train_test_split

    from sklearn_groupinf._tabular import as_categorical_safe, make_pipeline

    df = make_frame()
    df["year"] = np.arange(len(df)) % 2
    path, out = tmp_path / "d.csv", tmp_path / "r.csv"
    df.to_csv(path, index=False)
    base = ["audit", path, "--label", "label", "--groups", "source", "year"]
    base += ["--drop", "id"]
    kept, dropped = run_many(
        [base + ["--keep-groups-as-feature", "--out", out], base + ["--quiet"]]
    )
    assert kept.returncode == 0 and dropped.returncode == 0, (kept, dropped)
    features = ["age", "income", "city", "source", "amount", "year"]
    assert f"# features (6): {', '.join(features)}; groups column(s) 'source', " in (
        kept.stdout
    )
    assert "kept as features" in kept.stdout
    assert "# features (4): age, income, city, amount; groups column(s)" in (
        dropped.stdout
    )
    assert "not used as features (--keep-groups-as-feature" in dropped.stdout
    report = pd.read_csv(out)
    y = df["label"].to_numpy()
    train, val = train_test_split(
        np.arange(len(df)), test_size=0.2, stratify=y, random_state=0
    )
    train, val = np.sort(train), np.sort(val)
    X = as_categorical_safe(df[features])
    groups = (df["source"] + " | " + df["year"].astype(str)).to_numpy()
    gi = GroupInfluence(make_pipeline(X.iloc[train], "logistic")).fit(
        X.iloc[train], y[train], X_target=X.iloc[val], y_target=y[val]
    )
    res = gi.score_groups(groups[train], method="interaction")
    assert len(res.groups) == 10
    got = dict(zip(report["group"], report["interaction"]))
    for g, e in zip(res.groups, res.estimate):
        assert got[g] == pytest.approx(e, rel=1e-6, abs=1e-12)
    assert dict(zip(report["group"], report["size"])) == dict(zip(res.groups, res.size))


def test_audit_shows_the_reliable_flag(data_csv, tmp_path, monkeypatch, capsys):
    """When GroupScores carries the per-group trust flag ``reliable``, the
    report shows it for each group (here a known pattern is injected)."""
    from sklearn_groupinf import cli

    original = GroupInfluence.score_groups

    def flagged(self, groups, *, method=None):
        res = original(self, groups, method=method)
        res["reliable"] = np.arange(len(res.groups)) % 2 == 0
        return res

    monkeypatch.setattr(GroupInfluence, "score_groups", flagged)
    out = tmp_path / "r.csv"
    args = ["audit", str(data_csv), "--label", "label", "--groups", "source"]
    assert cli.main(args + ["--drop", "id", "--out", str(out), "--quiet"]) == 0
    report = pd.read_csv(out)
    expected = {g: k % 2 == 0 for k, g in enumerate("ABCDE")}
    assert dict(zip(report["group"], report["reliable"])) == expected
    printed = capsys.readouterr().out
    assert "reliable" in printed.splitlines()[2]  # the table's header
    assert "# reliable: 3 of 5" in printed


def _bad_inputs(tmp):
    good = make_frame(n=60)
    cases = {}
    idlike = good.copy()
    idlike["name"] = [f"customer {i}" for i in range(len(good))]
    idlike.to_csv(tmp / "idlike.csv", index=False)
    write_stray_quote_csv(tmp / "quote.csv")
    (tmp / "semicolon.csv").write_bytes(b"a;b;label\n1;2;0\n3;4;1\n")
    (tmp / "latin1.csv").write_bytes(
        "a,label\nBesan\u00e7on,0\nNice,1\n".encode("latin-1")
    )
    one = good.copy()
    one["label"] = "yes"
    allnan = good.copy()
    allnan["empty"] = np.nan
    gnan = good.copy()
    gnan.loc[[3, 9], "source"] = np.nan
    for name, frame in [
        ("good", good),
        ("one", one),
        ("allnan", allnan),
        ("gnan", gnan),
    ]:
        frame.to_csv(tmp / f"{name}.csv", index=False)
    (tmp / "empty.csv").write_bytes(b"")
    (tmp / "header.csv").write_bytes(b"a,b,label\n")
    g = tmp / "good.csv"
    cases["missing file"] = (
        ["audit", tmp / "nope.csv", "--label", "label", "--groups", "source"],
        "does not exist",
    )
    cases["missing label column"] = (
        ["audit", g, "--label", "target", "--groups", "source"],
        "'target' is not in",
    )
    cases["missing groups column"] = (
        [
            "clean",
            g,
            "--label",
            "label",
            "--groups",
            "site",
            "--budget",
            "1",
            "--out",
            tmp / "o.csv",
        ],
        "'site' is not in",
    )
    cases["empty file"] = (
        ["audit", tmp / "empty.csv", "--label", "label", "--groups", "a"],
        "is empty",
    )
    cases["header only"] = (
        ["audit", tmp / "header.csv", "--label", "label", "--groups", "a"],
        "no data rows",
    )
    cases["one class"] = (
        ["audit", tmp / "one.csv", "--label", "label", "--groups", "source"],
        "single class",
    )
    cases["non-numeric label for regressor"] = (
        ["audit", g, "--label", "source", "--groups", "id", "--model", "ridge"],
        "needs a numeric label",
    )
    cases["all-missing column"] = (
        ["audit", tmp / "allnan.csv", "--label", "label", "--groups", "source"],
        "entirely missing",
    )
    cases["groups with missing values"] = (
        ["audit", tmp / "gnan.csv", "--label", "label", "--groups", "source"],
        "missing in 2 row(s)",
    )
    cases["output is the input"] = (
        ["clean", g, "--label", "label", "--budget", "2", "--out", g],
        "never overwritten",
    )
    # output paths are checked before computing, with a message that says why
    cases["audit --out in a missing directory"] = (
        ["audit", g, "--label", "label", "--groups", "source"]
        + ["--out", tmp / "nodir" / "r.csv"],
        "nodir' does not exist",
    )
    cases["clean --report in a missing directory"] = (
        ["clean", g, "--label", "label", "--budget", "2", "--out", tmp / "o.csv"]
        + ["--report", tmp / "nodir" / "r.csv"],
        "--report",
    )
    cases["budget neither a count nor a fraction"] = (
        ["clean", g, "--label", "label", "--budget", "2.5", "--out", tmp / "o.csv"],
        "neither a whole number",
    )
    cases["non-positive --C"] = (
        ["audit", g, "--label", "label", "--groups", "source", "--C", "0"],
        "--C must be > 0",
    )
    cases["identifier-like categorical feature"] = (
        ["audit", tmp / "idlike.csv", "--label", "label", "--groups", "source"],
        "column 'name' of",
    )
    cases["--keep-groups-as-feature without --groups"] = (
        ["clean", g, "--label", "label", "--budget", "2", "--out", tmp / "o.csv"]
        + ["--keep-groups-as-feature"],
        "needs --groups",
    )
    cases["semicolon-separated"] = (
        ["audit", tmp / "semicolon.csv", "--label", "label", "--groups", "a"],
        "separated by ';'",
    )
    cases["not UTF-8"] = (
        ["audit", tmp / "latin1.csv", "--label", "label", "--groups", "a"],
        "is not UTF-8 text",
    )
    cases["quote inside an unquoted field"] = (
        ["clean", tmp / "quote.csv", "--label", "label", "--groups", "half"]
        + ["--drop", "id", "note", "--validation", g, "--budget", "1"]
        + ["--out", tmp / "o.csv"],
        "double quote inside an unquoted field",
    )
    return cases


def test_bad_input_one_line_error_exit_2(tmp_path, capsys):
    """Each bad input: exit status 2, one line on stderr, nothing on stdout.

    Run through ``cli.main`` in this process (an uncaught exception fails the
    test); one case also runs as a real process."""
    from sklearn_groupinf import cli

    cases = _bad_inputs(tmp_path)
    digests = {p.name: digest(p) for p in tmp_path.iterdir()}
    (first, _), *_ = cases.values()
    proc = run_cli(*first)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("groupinf: error:") and proc.stdout == ""
    for name, (args, message) in cases.items():
        status = cli.main([str(a) for a in args])
        out, err = capsys.readouterr()
        assert status == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("groupinf: error:"), (
            name,
            err,
        )
        assert message in lines[0], (name, lines[0])
        assert not lines[0].endswith("None"), name
        assert out == "", name
    assert {
        p.name: digest(p) for p in tmp_path.iterdir() if p.name in digests
    } == digests
    assert not (tmp_path / "o.csv").exists()
    assert not (tmp_path / "o_removed.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(digests)


def test_stray_quote_is_detected_before_any_copy(tmp_path):
    """The line-based record splitter and pandas disagree on the last two
    records of this file although the counts match: removing either would
    write a file that does not parse as the kept rows."""
    from sklearn_groupinf._csvio import InputError, RawCSV, read_csv

    path = tmp_path / "quote.csv"
    write_stray_quote_csv(path)
    data = path.read_bytes()
    raw = RawCSV(str(path), data)
    assert len(raw.row_spans) == len(pd.read_csv(path)) == 60
    assert not raw.copies_exactly([59]) and not raw.copies_exactly([58])
    assert raw.copies_exactly([0, 10])
    read_csv(str(path))  # audit only reads it: fine
    with pytest.raises(InputError, match="double quote"):
        read_csv(str(path), copyable=True)
    assert path.read_bytes() == data


def test_outputs_are_all_or_nothing(tmp_path):
    """A failure while writing a later output leaves every destination as it
    was and no temporary file behind."""
    from sklearn_groupinf._csvio import InputError, Outputs

    first = tmp_path / "out.csv"
    first.write_text("old\n")

    def fail(path):
        raise OSError(28, "No space left on device")

    with pytest.raises(InputError, match="cannot write report .*No space left"):
        with Outputs() as outputs:
            outputs.stage(first, lambda p: open(p, "w").write("new\n"), what="rows")
            outputs.stage(tmp_path / "rep.csv", fail, what="report")
            outputs.commit()
    assert first.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    first.chmod(0o640)
    with Outputs() as outputs:
        outputs.stage(first, lambda p: open(p, "w").write("new\n"), what="rows")
        outputs.stage(tmp_path / "rep.csv", lambda p: open(p, "w").close(), what="r")
        outputs.commit()
    assert first.read_text() == "new\n"
    assert first.stat().st_mode & 0o777 == 0o640  # an existing file's mode
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "rep.csv").stat().st_mode & 0o777 == 0o666 & ~umask
    (tmp_path / "rep.csv").unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


@pytest.mark.parametrize(
    "text, expected",
    [("5", 5), ("5.0", 5), ("1.0", 1), ("0.05", 0.05), ("auto", "auto")],
)
def test_parse_budget_counts_and_fractions(text, expected):
    from sklearn_groupinf._clean_command import parse_budget

    got = parse_budget(text)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("text", ["2.5", "0", "-3", "nan", "inf", "ten"])
def test_parse_budget_rejects(text):
    from sklearn_groupinf._clean_command import parse_budget
    from sklearn_groupinf._csvio import InputError

    with pytest.raises(InputError, match="--budget"):
        parse_budget(text)


def test_library_messages_name_the_cli_options():
    from sklearn_groupinf.cli import cli_message

    text = (
        "The Hessian is ill-conditioned (reciprocal condition number 3e-17 with "
        "damping=0.0); damping=4.5e-09 would bring it to about 1e-8 (damping>=1e-9)"
    )
    got = cli_message(text)
    assert "damping=" not in got and "damping>" not in got
    assert "with --damping 0.0" in got and "--damping 4.5e-09 would" in got
    assert "--damping >= 1e-9" in got
    assert cli_message("pass method='second_order'") == "pass --method second_order"
    assert "--C" in cli_message("The 'C' parameter of LogisticRegression must be")


def test_demo_plot_option_saves_the_demo_rows(monkeypatch, tmp_path):
    """``demo --plot`` draws the rows the demo printed (demo itself is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from sklearn_groupinf import _demo, cli, plotting

    rows = [
        dict(
            group=g,
            size=10,
            first_order=0.1 * g,
            interaction=0.12 * g,
            second_order=0.0,
            newton=0.0,
            actual=0.13 * g if g < 2 else np.nan,
        )
        for g in range(4)
    ]
    monkeypatch.setattr(_demo, "run_demo", lambda **kw: rows)
    seen = {}
    original = plotting.GroupInfluenceDisplay.plot

    def spy(self, ax=None):
        seen["display"] = original(self, ax=ax)
        return seen["display"]

    monkeypatch.setattr(plotting.GroupInfluenceDisplay, "plot", spy)
    monkeypatch.setattr(Figure, "savefig", lambda self, path: open(path, "wb").close())
    assert cli.main(["demo", "--plot", str(tmp_path / "d.png")]) == 0
    disp = seen["display"]
    heights = [b.get_height() for b in disp.bars_["interaction"]]
    np.testing.assert_allclose(heights, [0.0, 0.12, 0.24, 0.36])
    np.testing.assert_allclose(
        [b.get_height() for b in disp.bars_["actual"]], [0.0, 0.13, 0.0, 0.0]
    )
    assert (tmp_path / "d.png").exists()


def test_verbose_progress_on_stderr(breast_cancer, capsys):
    """``verbose=1`` logs the long steps of ``fit`` on stderr, nothing on stdout."""
    from sklearn.linear_model import LogisticRegression

    X, y, Xt, yt = breast_cancer
    GroupInfluence(LogisticRegression(), verbose=1).fit(X, y, X_target=Xt, y_target=yt)
    captured = capsys.readouterr()
    assert captured.out == ""
    for step in (
        "fitting LogisticRegression on 400 examples",
        "per-example removal gradient norms (400 x 31)",
        "solving the Hessian system",
        "done, target log_loss",
    ):
        assert step in captured.err
    GroupInfluence(LogisticRegression()).fit(X, y, X_target=Xt, y_target=yt)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "data, rows, expected",
    [
        # quoted newline and doubled quotes inside a record, blank line kept
        (b'a,b\n1,"x\ny"\n\n2,"q""\n"\n3,z', [1], b'a,b\n1,"x\ny"\n\n3,z'),
        # CRLF line endings, last row without a newline removed
        (b"a,b\r\n1,2\r\n3,4", [1], b"a,b\r\n1,2\r\n"),
        (b"a,b\r\n1,2\r\n3,4\r\n", [0, 1], b"a,b\r\n"),
    ],
)
def test_raw_csv_removes_exactly_the_records(tmp_path, data, rows, expected):
    from sklearn_groupinf._tabular import RawCSV

    path = tmp_path / "in.csv"
    path.write_bytes(data)
    raw = RawCSV(str(path), data)
    pd.testing.assert_index_equal(
        pd.read_csv(path).index, pd.RangeIndex(len(raw.row_spans))
    )
    assert raw.without(rows) == expected
    assert raw.copies_exactly(rows)
    assert path.read_bytes() == data
