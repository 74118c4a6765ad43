"""Pairwise interaction operators ``K = A M A'``: dense (tiled) or implicit.

Every pairwise estimator is ``est(S) = b' 1_S + 1/2 1_S' K 1_S`` with
``K = A M A'`` for per-unit rows ``A`` (``n_units x r0``, ``r0 <= 2 P``) and a
small symmetric ``M`` (the target Hessian for ``interaction``). ``M`` is
factored once, ``M = V diag(lam) V'``, so that

    K = W diag(sigma) W',   W = A V |lam|^{1/2},   sigma = sign(lam),

with ``W`` of width ``r <= r0`` (signed ``sigma`` for an indefinite target
Hessian). The implicit form keeps ``W`` (``O(n r)`` memory); the dense form
builds ``K`` in row tiles on the compute device: with torch on CUDA when
torch sees a device, with torch on the CPU when torch is already imported,
and with numpy/BLAS on the CPU otherwise (a Linux machine without an NVIDIA
driver never imports torch for it: importing it costs seconds and could only
give the CPU).

This is the only module that chooses a device.
"""

import glob
import os
import re
import sys

import numpy as np
from scipy.sparse.linalg import LinearOperator

DEFAULT_MAX_DENSE_BYTES = 2 * 1024**3


TORCH_INSTALL = 'pip install "sklearn-groupinf[torch]"'
_TORCH_DEVICE = re.compile(r"^(cuda|mps|xpu|hip)(:\d+)?$")


def _cpu_only_without_torch():
    """torch is not imported yet and no NVIDIA driver is visible (Linux)."""
    if "torch" in sys.modules or not sys.platform.startswith("linux"):
        return False
    driver = os.path.exists("/proc/driver/nvidia/version")
    return not (driver or glob.glob("/dev/nvidia[0-9]*"))


def resolve_device(device="auto"):
    """The compute device of dense interaction tiles.

    Parameters
    ----------
    device : "auto", "cpu", "cuda", "cuda:N" or a torch device
        ``"auto"``: CUDA when torch is installed and sees a device, else CPU.

    Returns
    -------
    torch.device or None
        ``None`` means numpy/BLAS on the CPU: ``device`` is ``"auto"`` or
        ``"cpu"`` and torch is not installed, or not imported yet where it
        could only give the CPU (``"cpu"``; ``"auto"`` on a Linux machine
        without an NVIDIA driver).

    Raises
    ------
    ImportError
        An accelerator was asked for and torch is not installed (the message
        names the ``torch`` extra).
    ValueError
        ``device`` is not a device name, or names CUDA where torch sees none.
    """
    if isinstance(device, str) and "torch" not in sys.modules:
        if device == "cpu" or (device == "auto" and _cpu_only_without_torch()):
            return None
    try:
        import torch
    except ImportError:
        if isinstance(device, str) and device in ("auto", "cpu"):
            return None
        if isinstance(device, str) and _TORCH_DEVICE.match(device):
            raise ImportError(
                f"device={device!r} needs torch, which is not installed. Install "
                f"it with {TORCH_INSTALL} (install the torch build for your "
                "accelerator first), or use device='cpu'."
            ) from None
        raise ValueError(
            "device must be 'auto', 'cpu', 'cuda' or 'cuda:N' (torch device names "
            f"need torch); got device={device!r}."
        ) from None
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device; got "
            f"device={device!r}."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but torch sees no CUDA device; use "
            "device='auto' or 'cpu'."
        )
    if dev.type not in ("cpu", "cuda"):  # e.g. "mps": checked by using it
        try:
            if dev.type == "meta":
                raise RuntimeError("a meta tensor holds no data")
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError) as exc:
            reason = str(exc).split(". ")[0][:160]
            raise ValueError(
                f"device={device!r} was requested but this torch cannot compute "
                f"on it ({reason}); use device='auto' or 'cpu'."
            ) from None
    return dev


def validate_device(device):
    """Check ``device`` early (at ``fit``) with the errors of :func:`resolve_device`.

    ``"auto"`` and ``"cpu"`` are accepted without importing torch, so that
    linear models never pay for importing it.
    """
    if isinstance(device, str) and device in ("auto", "cpu"):
        return
    resolve_device(device)


def resolve_dtype(dtype):
    """float64 by default; float32 allowed (documented precision loss)."""
    if dtype is None:
        return np.float64
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got {dtype}.")
    return dtype.type


def factor_middle(M, rtol=1e-12):
    """Eigen-factor the symmetric middle matrix: ``M = V diag(lam) V'``.

    Returns ``(V |lam|^{1/2}, sign(lam))`` keeping ``|lam| > rtol * max|lam|``.
    """
    r0 = M.shape[0]
    if r0 == 0 or not np.any(M):
        return np.zeros((r0, 0)), np.zeros(0)
    lam, V = np.linalg.eigh(0.5 * (M + M.T))
    keep = np.abs(lam) > rtol * np.abs(lam).max()
    lam, V = lam[keep], V[:, keep]
    return V * np.sqrt(np.abs(lam)), np.sign(lam)


class InteractionOperator:
    """Interaction matrix ``K = W diag(sigma) W'`` among ``n_units`` units.

    Parameters
    ----------
    W : ndarray of shape (n_units, r)
    sigma : ndarray of shape (r,)
        +1 / -1 signs.

    Use :func:`make_interaction` to build one.
    """

    form = "implicit"

    def __init__(self, W, sigma):
        self.W = W
        self.sigma = sigma
        self.shape = (W.shape[0], W.shape[0])

    def diag(self):
        from ._lazy_rows import row_stats  # chunked: no n x r temporary

        return row_stats(self.W, self.sigma)[1]

    def column(self, j):
        """``K[:, j]`` in ``O(n r)``."""
        return self.W @ (self.sigma * self.W[j])

    def matvec(self, v):
        """``K v`` for ``v`` of shape ``(n,)`` or ``(n, k)`` in ``O(n r k)``."""
        t = self.W.T @ v
        t = self.sigma * t if t.ndim == 1 else self.sigma[:, None] * t
        return self.W @ t

    def quadratic_sum(self, idx):
        """``1_S' K 1_S`` for ``S = idx``."""
        s = self.W[np.asarray(idx, dtype=int)].sum(axis=0)
        return float(np.dot(self.sigma * s, s))

    def as_linear_operator(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (symmetric, never dense)."""
        dtype = self.W.dtype
        return LinearOperator(
            self.shape,
            matvec=self.matvec,
            rmatvec=self.matvec,
            matmat=self.matvec,
            dtype=dtype,
        )


class DenseInteractionOperator(InteractionOperator):
    """``K`` materialised (built in tiles on the compute device)."""

    form = "dense"

    def __init__(self, W, sigma, *, device="auto", dtype=None, tile_size=4096):
        super().__init__(W, sigma)
        self.K = dense_from_factors(
            W, sigma, device=device, dtype=dtype, tile_size=tile_size
        )

    def diag(self):
        return np.diag(self.K).copy()

    def column(self, j):
        return self.K[:, j]

    def matvec(self, v):
        return self.K @ v


def dense_from_factors(W, sigma, *, device="auto", dtype=None, tile_size=4096):
    """``W diag(sigma) W'`` built tile by tile on ``device``; returns numpy.

    Parameters
    ----------
    W : ndarray of shape (n, r)
    sigma : ndarray of shape (r,)
    device : "auto", "cpu", "cuda" or a torch device
    dtype : None (float64), float32 or float64
    tile_size : int
        Rows per tile; results do not depend on it.
    """
    if tile_size < 1:
        raise ValueError(f"tile_size must be a positive integer; got {tile_size!r}.")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype)
    n = W.shape[0]
    out = np.empty((n, n), dtype=dt)
    if W.shape[1] == 0:
        out[:] = 0.0
        return out
    if dev is None:
        return _dense_numpy(W, sigma, out, tile_size)
    import torch

    tdt = torch.float64 if dt == np.float64 else torch.float32
    Wt = torch.as_tensor(np.ascontiguousarray(W), dtype=tdt, device=dev)
    Ws = Wt * torch.as_tensor(sigma, dtype=tdt, device=dev)
    WtT = Wt.T.contiguous()
    out_t = torch.from_numpy(out)
    for i0 in range(0, n, tile_size):
        if dev.type == "cpu":
            torch.matmul(Ws[i0 : i0 + tile_size], WtT, out=out_t[i0 : i0 + tile_size])
        else:
            out_t[i0 : i0 + tile_size].copy_((Ws[i0 : i0 + tile_size] @ WtT).cpu())
    return out


def _dense_numpy(W, sigma, out, tile_size):
    """The CPU path without torch: the same row tiles with numpy/BLAS."""
    dt = out.dtype
    Ws = (W * sigma).astype(dt)
    WtT = np.ascontiguousarray(W.T, dtype=dt)
    for i0 in range(0, W.shape[0], tile_size):
        np.matmul(Ws[i0 : i0 + tile_size], WtT, out=out[i0 : i0 + tile_size])
    return out


def make_interaction(
    A,
    M,
    *,
    form="auto",
    max_dense_bytes=DEFAULT_MAX_DENSE_BYTES,
    device="auto",
    dtype=None,
    tile_size=4096,
    factor=None,
):
    """Build the interaction operator ``K = A M A'`` in the requested form.

    Parameters
    ----------
    A : ndarray of shape (n_units, r0)
    M : ndarray of shape (r0, r0), symmetric
    form : {"auto", "dense", "implicit"}
        ``"auto"`` is dense when ``n_units**2`` entries fit in
        ``max_dense_bytes``, implicit otherwise.
    max_dense_bytes : int
        Memory budget of a dense ``K``. Asking for ``form="dense"`` above it raises.
    device, dtype, tile_size : see :func:`dense_from_factors`.
    factor : tuple (C, sigma), optional
        ``factor_middle(M)`` computed earlier (an eigendecomposition of the
        ``r0 x r0`` middle matrix is the costly step for many parameters).
    """
    if form not in ("auto", "dense", "implicit"):
        raise ValueError(f"form must be 'auto', 'dense' or 'implicit'; got {form!r}.")
    n = A.shape[0]
    itemsize = np.dtype(resolve_dtype(dtype)).itemsize
    need = n * n * itemsize
    C, sigma = factor_middle(M) if factor is None else factor
    W = A.compose(C) if hasattr(A, "compose") else A @ C  # lazy rows stay lazy
    if form == "dense" and need > max_dense_bytes:
        raise MemoryError(
            f"A dense interaction matrix among {n} units needs {need:,} bytes "
            f"({need / 1e9:.3g} GB), over max_dense_bytes={max_dense_bytes:,}. Use "
            "form='implicit' (a LinearOperator, O(n * n_params) memory) or raise "
            "max_dense_bytes."
        )
    if form == "dense" or (form == "auto" and need <= max_dense_bytes):
        return DenseInteractionOperator(
            W, sigma, device=device, dtype=dtype, tile_size=tile_size
        )
    return InteractionOperator(W, sigma)
