"""Helpers shared by the benchmark scripts: doc path, tables, environment line."""

import os
import platform

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(HERE, os.pardir, "doc")


def fmt_table(header, rows):
    """A reST simple table (also readable as plain text)."""
    cols = [header] + [[str(c) for c in r] for r in rows]
    width = [max(len(r[i]) for r in cols) for i in range(len(header))]
    line = "  ".join("=" * w for w in width)
    out = [line, "  ".join(h.ljust(w) for h, w in zip(header, width)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, width)) for r in cols[1:]]
    out.append(line)
    return "\n".join(out)


def set_up(device, threads):
    """Limit BLAS/torch threads, resolve the device, print the environment.

    Returns ``(dev, env, note)``: the torch device, a one-line description of
    the machine, and a note when the figures are CPU figures.
    """
    import torch
    from threadpoolctl import threadpool_limits

    from sklearn_groupinf._interaction import resolve_device

    threadpool_limits(threads)
    torch.set_num_threads(threads)
    dev = resolve_device(device)
    note = (
        "no GPU available in this session; all figures are CPU figures"
        if dev.type == "cpu"
        else ""
    )
    env = (
        f"device: {dev}; torch {torch.__version__}, BLAS/torch threads "
        f"{threads}; numpy {np.__version__}; {platform.machine()}, "
        f"{os.cpu_count()} cores"
    )
    print(env)
    if note:
        print("NOTE:", note)
    return dev, env, note


def write_doc(name, text):
    """Write ``doc/<name>`` (a results page) and say where."""
    path = os.path.join(DOC, name)
    with open(path, "w") as fh:
        fh.write(text)
    print(f"wrote {os.path.normpath(path)}")
