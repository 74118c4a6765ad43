"""A rank-``r`` factor of the target curvature from curvature-vector products.

The interaction term needs the target's Gauss-Newton matrix ``H_f`` only
through ``u_i' H_f u_j`` with ``u_i = H^{-1} q_i``. With a factor
``H_f ~ B diag(lam) B'`` (``B``: ``P x r``) the interaction rows are
``Q (H^{-1} B)``: ``r`` solves and ``n x r`` values, never ``P x P``.

:func:`low_rank_target_ggn` finds the factor by randomized range finding
(Halko, Martinsson & Tropp 2011, algorithms 4.1 and 5.3): ``r + oversample``
products with a Gaussian test matrix, an orthonormal basis ``Y`` of their
range (after ``n_iter`` power iterations), the small matrix ``Y' C Y`` and
its eigenvalues, of which the ``r`` largest in magnitude are kept (signed,
so an indefinite target curvature is allowed). It costs
``(r + oversample) (2 + 2 n_iter)`` target curvature-vector products and
``(r + oversample) P`` values.

``test_matrix`` (what ``KroneckerBackend`` passes by default: random
combinations of the training rows' shifts ``H^{-1} q_i``) gives the Nystrom
approximation ``Y (Omega' Y)^+ Y'`` with ``Y = H_f Omega`` instead, exact on
the span of ``Omega``. ``precondition`` (a fitted
:class:`KroneckerCurvature`) finds the factor of ``H^{-1/2} H_f H^{-1/2}``
and maps it back (``B = H^{1/2} B_C``). ``benchmarks/kfac_target_rank.py``
compares the three: the Nystrom sketch on the shifts was the most accurate
from ``r = 32`` on, the preconditioned range finder never.
"""

import numpy as np

NON_FINITE = (
    "The low-rank target curvature has non-finite entries (overflow in the "
    "target?). Check the target at the fitted parameters."
)


def low_rank_target_ggn(
    products,
    n_params,
    rank,
    *,
    precondition=None,
    test_matrix=None,
    oversample=10,
    n_iter=0,
    random_state=0,
):
    """``(B, M)`` with ``B (P, r)``, ``M = diag(lam)`` and ``H_f ~ B M B'``.

    Parameters
    ----------
    products : callable
        ``products(V)`` returns ``V H_f`` for rows ``V`` ``(k, P)``.
    n_params : int
        ``P``.
    rank : int
        ``r`` (capped at ``P``).
    precondition : object with ``power(V, p)`` or None
        Find the factor of ``H^{-1/2} H_f H^{-1/2}`` (see the module docstring).
    test_matrix : ndarray of shape (P, l) or None
        Directions where the factor must be accurate (e.g. random
        combinations of the parameter shifts ``H^{-1} q_i``): the Nystrom
        approximation ``Y (Omega' Y)^+ Y'`` with ``Y = H_f Omega`` is exact
        on their span (when ``l <= rank``), from ``l`` products. Ignores
        ``precondition``, ``oversample`` and ``n_iter``.
    oversample : int, default=10
        Extra test vectors beyond ``r``.
    n_iter : int, default=0
        Power iterations (each costs ``2 (r + oversample)`` more products).
    random_state : int, default=0
        Seed of the Gaussian test matrix.

    Returns
    -------
    B : ndarray of shape (P, r)
    M : ndarray of shape (r, r)
        Diagonal: the kept eigenvalues.
    """
    P = int(n_params)
    r = min(int(rank), P)
    if test_matrix is not None:
        return _nystrom(products, np.asarray(test_matrix, dtype=np.float64), r)
    ell = min(P, r + int(oversample))

    def apply(V):  # C V for columns V (P, k)
        if precondition is None:
            return np.asarray(products(V.T)).T
        W = precondition.power(V, -0.5)
        return precondition.power(np.asarray(products(W.T)).T, -0.5)

    rng = np.random.default_rng(random_state)
    Y = apply(rng.standard_normal((P, ell)))
    for _ in range(int(n_iter)):
        Y = apply(np.linalg.qr(Y)[0])
    Qb = np.linalg.qr(Y)[0]
    T = Qb.T @ apply(Qb)
    lam, W = np.linalg.eigh(0.5 * (T + T.T))
    keep = np.argsort(-np.abs(lam))[:r]
    lam, W = lam[keep], W[:, keep]
    B = Qb @ W
    if precondition is not None:
        B = precondition.power(B, 0.5)
    if not (np.all(np.isfinite(B)) and np.all(np.isfinite(lam))):
        raise FloatingPointError(NON_FINITE)
    return B, np.diag(lam)


#: Rows per chunk of the float64 inner products of :func:`nystrom_tensor`.
GRAM_CHUNK = 2**16


def nystrom_tensor(products, Om, rank):
    """:func:`low_rank_target_ggn`'s Nystrom factor for a torch ``Om`` ``(P, l)``.

    ``products(Om)`` returns ``H_f Om`` ``(P, l)`` as a tensor. The ``P x l``
    arrays stay tensors in ``Om``'s dtype (a network's float32: the values
    the solves and products produce); the inner products ``Om' Y``, ``Y' Y``
    and ``B = Y C`` are accumulated in float64 over chunks of
    :data:`GRAM_CHUNK` rows, so no float64 ``P x l`` copy is made. Returns
    ``(B, M)``: ``B`` a tensor in ``Om``'s dtype, ``M`` a float64 diagonal.
    """
    import torch

    Y = products(Om)
    l = Om.shape[1]
    T = np.zeros((l, l))
    gram = np.zeros((l, l))
    for j0 in range(0, Om.shape[0], GRAM_CHUNK):
        Yc = Y[j0 : j0 + GRAM_CHUNK].double()
        T += (Om[j0 : j0 + GRAM_CHUNK].double().T @ Yc).cpu().numpy()
        gram += (Yc.T @ Yc).cpu().numpy()
    if not (np.all(np.isfinite(T)) and np.all(np.isfinite(gram))):
        raise FloatingPointError(NON_FINITE)
    lam, C = _nystrom_middle(T, lambda V: V.T @ gram @ V, min(int(rank), Om.shape[0]))
    B = torch.empty((Y.shape[0], C.shape[1]), dtype=Y.dtype, device=Y.device)
    Ct = torch.as_tensor(C, dtype=torch.float64, device=Y.device)
    for j0 in range(0, Y.shape[0], GRAM_CHUNK):
        B[j0 : j0 + GRAM_CHUNK] = Y[j0 : j0 + GRAM_CHUNK].double() @ Ct
    # column sums in float64 are finite when every entry is, and for float32
    # entries only then (they cannot overflow there; float64 entries near the
    # overflow threshold raise too); isfinite on all P x l entries took 1.6 s
    # at P = 10^6, l = 64
    if not (
        bool(torch.isfinite(B.sum(0, dtype=torch.float64)).all())
        and np.all(np.isfinite(lam))
    ):
        raise FloatingPointError(NON_FINITE)
    return B, np.diag(lam)


def _nystrom_middle(T, gram_of, r):
    """``(lam, C)`` with ``B = Y C`` (see :func:`_nystrom`), from ``T = Om' Y``
    and ``gram_of(V) = V' Y' Y V``."""
    t, V = np.linalg.eigh(0.5 * (T + T.T))
    keep = np.abs(t) > 1e-10 * max(np.abs(t).max(), np.finfo(float).tiny)
    t, V = t[keep], V[:, keep]
    gram = gram_of(V)
    s2, Wz = np.linalg.eigh(0.5 * (gram + gram.T))
    ok = s2 > 1e-12 * max(s2.max(), np.finfo(float).tiny)
    S, Wz = np.sqrt(s2[ok]), Wz[:, ok]
    C = (S[:, None] * (Wz.T / t) @ Wz) * S[None, :]
    lam, E = np.linalg.eigh(0.5 * (C + C.T))
    order = np.argsort(-np.abs(lam))[:r]
    return lam[order], V @ (Wz / S) @ E[:, order]


def _nystrom(products, Om, r):
    """``(B, M)`` of ``Y (Om' Y)^+ Y'`` (``Y = H_f Om``), truncated to rank ``r``.

    With ``Z = Y V`` (``Om' Y = V diag(t) V'``) and the thin SVD of ``Z``
    from its Gram matrix (``Z = U_z S W_z'``), ``Y (Om' Y)^+ Y' = U_z C U_z'``
    with ``C = S W_z' diag(1/t) W_z S``; ``B = U_z E`` for the leading
    eigenvectors ``E`` of ``C``, formed as one product ``Y (V W_z S^-1 E)``
    (no ``P x l`` temporaries beyond ``Y`` and ``B``).
    """
    Y = np.asarray(products(Om.T)).T
    lam, C = _nystrom_middle(Om.T @ Y, lambda V: V.T @ (Y.T @ Y) @ V, r)
    B = Y @ C
    if not (np.all(np.isfinite(B)) and np.all(np.isfinite(lam))):
        raise FloatingPointError(NON_FINITE)
    return B, np.diag(lam)
