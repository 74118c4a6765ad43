"""End-to-end tests of the ``groupinf`` command line on generated CSV files.

Each command runs in a subprocess (``python -m sklearn_groupinf``), as a user
would run it. Bad input must give a one-line error, exit status 2, no
traceback, and leave the input file unchanged.
"""

import hashlib
import os
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


def run_many(arg_lists):
    """Run several commands concurrently (start-up dominates their time)."""
    procs = [
        (
            args,
            subprocess.Popen(
                [sys.executable, "-m", "sklearn_groupinf", *map(str, args)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=ENV,
            ),
        )
        for args in arg_lists
    ]
    done = []
    for args, proc in procs:
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return done


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


def test_help_documents_every_option_with_an_example():
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
            ],
        ),
        ("demo", ["--n-refit", "--plot", "--blas-threads"]),
    ]
    procs = run_many([(command, "--help") for command, _ in expected])
    for (command, options), proc in zip(expected, procs):
        assert proc.returncode == 0
        for opt in options:
            assert opt in proc.stdout
        assert "example:" in proc.stdout
        assert f"groupinf {command}" in proc.stdout


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
    assert list(report.columns) == [
        "rank",
        "group",
        "size",
        "share",
        "first_order",
        "interaction",
        "actual",
    ]
    assert np.all(np.diff(report["interaction"]) <= 0)  # sorted, largest first
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
    res = gi.score_groups(df["source"].to_numpy()[train])
    expected = dict(zip(res.groups, res.estimate))
    got = dict(zip(report["group"], report["interaction"]))
    for g in expected:
        assert got[g] == pytest.approx(expected[g], rel=1e-6, abs=1e-12)
    assert dict(zip(report["group"], report["size"])) == dict(zip(res.groups, res.size))
    # the two largest |estimates| were refitted, and the estimate is close
    done = report.dropna(subset=["actual"])
    assert len(done) == 2
    np.testing.assert_allclose(done["interaction"], done["actual"], rtol=0.5)
    assert png.stat().st_size > 0


def test_clean_writes_input_minus_reported_rows(data_csv, tmp_path):
    before = digest(data_csv)
    out = tmp_path / "cleaned.csv"
    proc = run_cli(
        "clean",
        data_csv,
        "--label",
        "label",
        "--drop",
        "id",
        "--budget",
        "12",
        "--out",
        out,
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    assert digest(data_csv) == before
    report = pd.read_csv(tmp_path / "cleaned_removed.csv")
    assert len(report) == 12 and report["step"].tolist() == list(range(1, 13))
    assert report["why"].str.contains("log_loss").all()
    lines = data_csv.read_bytes().splitlines(keepends=True)
    expected = [ln for k, ln in enumerate(lines, 1) if k not in set(report["line"])]
    assert out.read_bytes().splitlines(keepends=True) == expected
    # the reported rows are the ones pandas sees at those positions
    df = pd.read_csv(data_csv)
    assert (df["label"].iloc[report["row"]].to_numpy() == report["label"]).all()
    kept = pd.read_csv(out)
    assert list(kept.columns) == list(df.columns)
    assert len(kept) == len(df) - 12
    assert "measured by refitting" in proc.stdout


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


def _bad_inputs(tmp):
    good = make_frame(n=60)
    cases = {}
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
    return cases


def test_bad_input_one_line_error_exit_2(tmp_path):
    cases = _bad_inputs(tmp_path)
    digests = {p.name: digest(p) for p in tmp_path.iterdir()}
    procs = run_many([args for args, _ in cases.values()])
    for (name, (args, message)), proc in zip(cases.items(), procs):
        assert proc.returncode == 2, (name, proc.stderr)
        assert "Traceback" not in proc.stderr, name
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("groupinf: error:"), (
            name,
            proc.stderr,
        )
        assert message in lines[0], (name, lines[0])
        assert proc.stdout == "", name
    assert {
        p.name: digest(p) for p in tmp_path.iterdir() if p.name in digests
    } == digests
    assert not (tmp_path / "o.csv").exists()


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
    raw.write_without(rows, tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_bytes() == expected
    assert path.read_bytes() == data
