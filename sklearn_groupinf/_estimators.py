"""The group estimators, in pairwise form where they have one.

With ``u_i = H^{-1} q_i`` (rows of ``U``), ``w = H^{-1} grad f``,
``H_f = grad^2 f``, ``r_i = H_i w`` and ``T_w = grad^3 J[w, ., .]``, every
estimator except ``newton`` is ``est(S) = b' 1_S + 1/2 1_S' A M A' 1_S`` with
``b = U grad f`` and

============  ======================  =====================================
method        A (per example)         M
============  ======================  =====================================
first_order   (none)                  0
interaction   U                       H_f
second_order  [U, R]                  [[H_f - T_w, I], [I, 0]]
============  ======================  =====================================

so group scores need only the per-group sums ``M_groups @ A`` (never an
``n x n`` matrix), and selection uses the same ``(b, A, M)``.
``newton`` evaluates the target exactly after one group-Newton step
``(H - H_S)^{-1} sum_{i in S} q_i``, solved either directly (a Cholesky
factorisation of ``H - H_S``) or, when the backend gives a low-rank factor of
``H_S`` and that is cheaper, by a Woodbury solve with the already factored
``H``.
"""

import warnings

import numpy as np
import scipy.linalg as sla

PAIRWISE_METHODS = ("first_order", "interaction", "second_order")
METHODS = PAIRWISE_METHODS + ("newton",)


def check_method(method, *, pairwise=False, name="method"):
    allowed = PAIRWISE_METHODS if pairwise else METHODS
    if method not in allowed:
        extra = (
            " 'newton' has no pairwise form, so selection and interaction "
            "matrices cannot use it; use 'second_order' or 'interaction'."
            if method == "newton"
            else ""
        )
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, allowed))}; got "
            f"{method!r}.{extra}"
        )
    return method


def pairwise_form(method, state, membership=None):
    """Return ``(A, M)`` per unit for ``method`` (``A=None`` when ``K = 0``).

    ``state`` is the fitted :class:`GroupInfluence`'s cache (``_FitState``).
    Units are the training examples, or the groups of ``membership`` (rows of
    ``A`` are then per-group sums, computed without per-example shifts).
    """
    if method == "first_order":
        return None, None
    if method == "interaction":
        return state.interaction_rows(membership)
    # second_order (backends that support it give a dense target Hessian)
    U = state.shifts(membership)
    R, _ = state.second_order_terms()
    if membership is not None:
        R = membership.aggregate(R)
    return np.hstack([U, R]), state.second_order_middle()


def quadratic_rows(A, M):
    """``diag(A M A')`` without forming ``A M A'``."""
    return np.einsum("ij,ij->i", A @ M, A)


class _FitState:
    """Everything ``fit`` computes that the estimators reuse.

    Only ``w = H^{-1} grad f`` is solved in ``fit`` (``influence = Q w``). The
    per-example shifts ``U = Q H^{-1}`` (``n`` solves, ``n x P`` values) are
    formed only when an estimator needs them; group scores solve once per group
    and, with a thin target factor ``B`` (``P x r``), interaction rows are
    ``Q (H^{-1} B)``: ``r`` solves and ``n x r`` values.
    """

    def __init__(self, backend, solver, grad_f, w, f0, *, max_bytes):
        self.backend = backend
        self.solver = solver
        self.grad_f = grad_f
        self.w = w
        self.f0 = f0
        self.max_bytes = max_bytes
        self._U = None
        self._target_factor = None
        self._solved_B = None
        self._thin_rows = None  # Q H^-1 B (n x r) when products are passes
        self._second = None
        self._second_M = None
        self._factors = {}

    @property
    def target_factor(self):
        """``(B, M)`` with ``grad^2 f = B M B'`` (see the backend protocol)."""
        if self._target_factor is None:
            self._target_factor = self.backend.target_hessian_factor()
        return self._target_factor

    @property
    def target_middle(self):
        """The middle ``M`` of :attr:`target_factor`, without forming ``B``
        when the backend gives ``M`` alone (``target_factor_middle``: K-FAC
        keeps ``B`` in its own coordinates; rotating it back costs a
        ``P x r`` array)."""
        if self._target_factor is None:
            fn = getattr(self.backend, "target_factor_middle", None)
            M = None if fn is None else fn()
            if M is not None:
                return M
        return self.target_factor[1]

    @property
    def U(self):
        """Per-example parameter shifts ``u_i = H^{-1} q_i`` ``(n, P)``."""
        if self._U is None:
            be = self.backend
            need = 8 * be.n_samples * be.n_params
            if need > self.max_bytes:
                raise MemoryError(
                    f"This estimate needs the per-example shifts H^-1 q_i "
                    f"({be.n_samples} x {be.n_params}, {need / 1e9:.2g} GB), more "
                    f"than max_dense_bytes={self.max_bytes}. Score groups instead "
                    "of examples, use a thin target factor (GroupInfluence with "
                    "curvature='kfac' or 'ekfac', or curvature='ggn' with "
                    "curvature_options={'hessian_solver': 'cg'}), or raise "
                    "max_dense_bytes."
                )
            self._U = self.solver.solve(be.removal_gradients().T).T
        return self._U

    def shifts(self, membership=None):
        """``H^{-1}`` times the removal gradient of each unit ``(units, P)``."""
        if membership is None:
            return self.U
        if self._U is not None:
            return membership.aggregate(self._U)
        QG = self.backend.aggregated_removal_gradients(membership.matrix)
        return self.solver.solve(QG.T).T

    def row_shifts(self, rows):
        """``u_i = H^{-1} q_i`` of training rows ``rows`` ``(len(rows), P)``."""
        if self._U is not None:
            return self._U[rows]
        return self.solver.solve(self.backend.removal_gradients(rows).T).T

    def interaction_rows(self, membership=None):
        """``(A, M)`` of the interaction estimator over the units.

        ``A M A' = U H_f U'`` with ``U`` the units' shifts. Matrix-free
        backends (``backend.matrix_free``) with fewer units than the width of
        the target factor use ``N`` target-Hessian products and an eigen-factor
        of the ``N x N`` matrix; otherwise ``A = U B`` (``B`` the target
        factor), computed as ``Q (H^{-1} B)`` when ``B`` is thin.
        """
        n_units = self.backend.n_samples if membership is None else membership.n_groups
        if membership is None and self._lazy_rows(n_units):
            from ._lazy_rows import RemovalProducts

            S = self._backend_solved_factor()
            if S is not None:
                return RemovalProducts(self.backend, S), self.target_middle
            B, Mf = self.target_factor
            S = self._solve_factor_or_inverse(B, self.backend.n_params)
            return RemovalProducts(self.backend, S), Mf

        def thin():
            # kept (n x r) when each product is a pass over a network's data
            A = self._thin_rows
            if A is None:
                A = self.backend.removal_gradient_products(self._solve_factor())
                if not getattr(self.backend, "cheap_removal_products", False):
                    self._thin_rows = A
            return A if membership is None else membership.aggregate(A)

        if membership is not None and self._U is None:
            rows = self._group_thin_rows(membership)  # any number of groups
            if rows is not None:
                return rows
        return self._rows(
            n_units, lambda: self.shifts(membership), thin, lazy_shifts=self._U is None
        )

    def gradient_rows(self, Q):
        """``(A, M)`` of the interaction estimator for removal gradients ``Q``."""
        return self._rows(
            len(Q), lambda: self.solver.solve(Q.T).T, lambda: Q @ self._solve_factor()
        )

    def _group_thin_rows(self, membership):
        """``(A, M)``: group rows ``(M Q) (H^{-1} B)`` from one pass of group
        sums and the factor's middle, or None.

        For backends whose group sums cost one pass whatever the width
        (``aggregated_removal_products``: K-FAC, ``n P`` against ``n P r``
        for the per-row factor); the last grouping's rows are kept. A
        backend's ``target_factor_group_rows(matrix)`` (K-FAC: the factor
        kept in its own coordinates) gives both without ``B`` itself.
        """
        fn = getattr(self.backend, "aggregated_removal_products", None)
        inverse = getattr(membership, "inverse", None)
        if fn is None or inverse is None:
            return None
        if self._thin_rows is not None:  # the per-row factor exists: no pass
            return membership.aggregate(self._thin_rows), self.target_middle
        key = (membership.n_groups, hash(np.asarray(inverse).tobytes()))
        cached = getattr(self, "_group_rows", None)
        if cached is None or cached[0] != key:
            direct = getattr(self.backend, "target_factor_group_rows", None)
            out = None if direct is None else direct(membership.matrix)
            if out is None:
                if self.target_factor[0] is None:
                    return None
                out = fn(membership.matrix, self._solve_factor()), self.target_middle
            cached = self._group_rows = (key, out)
        return cached[1]

    def _rows(self, n_units, shifts, thin, *, lazy_shifts=True):
        """Choose how to factor ``U H_f U'`` for ``n_units`` units (see above).

        ``shifts()`` gives ``U``; ``thin()`` gives ``Q (H^{-1} B)``.
        """
        by_products = getattr(self.backend, "few_units_by_products", True)
        if (
            by_products
            and self.backend.matrix_free
            and n_units <= self.backend.target_factor_width()
        ):
            return self._factor_by_products(shifts())
        solved = self._backend_solved_factor() if lazy_shifts else None
        if solved is not None:  # B itself is never formed
            if solved.shape[1] < n_units or self._thin_rows is not None:
                return thin(), self.target_middle
        B, Mf = self.target_factor
        if B is None:
            return shifts(), Mf
        if lazy_shifts and (B.shape[1] < n_units or self._thin_rows is not None):
            return thin(), Mf
        return shifts() @ B, Mf

    def _lazy_rows(self, n_units):
        """Keep per-example rows ``Q S`` as products (no ``n x r`` array)?

        When the backend's products are passes over its data
        (``cheap_removal_products``), the shifts are not stored, and a dense
        ``n x n`` matrix could not be formed (``4 n^2 > max_bytes``), or
        the rows are on a Dask cluster (``backend.distributed``: never
        gathered).
        """
        return (
            getattr(self.backend, "cheap_removal_products", False)
            and self._U is None
            and (
                4 * n_units * n_units > self.max_bytes
                or getattr(self.backend, "distributed", False)
            )
        )

    def _solve_factor_or_inverse(self, B, P):
        return self.solver.solve(np.eye(P)) if B is None else self._solve_factor()

    def _backend_solved_factor(self):
        """``H^{-1} B`` when known without forming ``B`` (the backend's
        ``solved_target_factor``, K-FAC; or computed already), else None."""
        if self._solved_B is None:
            fn = getattr(self.backend, "solved_target_factor", None)
            solved = None if fn is None else fn()
            if solved is None:
                return None
            self._solved_B = solved
        return self._solved_B

    def _solve_factor(self):
        """``H^{-1} B``: the backend's (K-FAC: without a solve) or solved."""
        if self._backend_solved_factor() is None:
            self._solved_B = self.solver.solve(self.target_factor[0])
        return self._solved_B

    def _factor_by_products(self, U):
        """``(W, diag(signs))`` with ``W diag(signs) W' = U H_f U'``."""
        from ._interaction import factor_middle

        K = U @ self.backend.target_hessian_products(U).T
        W, signs = factor_middle(K)
        return W, np.diag(signs)

    def middle_factor(self, method, M):
        """``factor_middle(M)`` of ``method``'s middle matrix, computed once."""
        cached = self._factors.get(method)
        if cached is None or cached[0] is not M:
            from ._interaction import factor_middle

            cached = self._factors[method] = (M, factor_middle(M))
        return cached[1]

    def second_order_middle(self):
        """``[[H_f - T_w, I], [I, 0]]`` ``(2P, 2P)``, built once."""
        if self._second_M is None:
            _, T = self.second_order_terms()
            B, Mf = self.target_factor
            H_f = Mf if B is None else B @ Mf @ B.T
            P = len(T)
            M = np.zeros((2 * P, 2 * P))
            M[:P, :P] = H_f - T
            M[:P, P:] = np.eye(P)
            M[P:, :P] = np.eye(P)
            self._second_M = M
        return self._second_M

    def second_order_terms(self):
        if not self.backend.supports_second_order:
            raise ValueError(
                f"method='second_order' needs per-example Hessian-vector products "
                f"and third derivatives, which {type(self.backend).__name__} does "
                "not provide; use method='interaction'."
            )
        if self._second is None:
            R = self.backend.example_hessian_vector(self.w)
            T = self.backend.third_derivative_matrix(self.w)
            self._second = (R, T)
        return self._second


def newton_estimates(state, membership, group_ids=None, *, strategy="auto"):
    """``f(theta + (H - H_S)^{-1} sum_S q_i) - f(theta)`` for each group.

    Parameters
    ----------
    state : _FitState
        The fitted :class:`GroupInfluence`'s cache.
    membership : object with ``n_groups`` and ``members(g)``
        Usually a :class:`~sklearn_groupinf._groups.GroupMembership`.
    group_ids : sequence of int, default=None
        Group numbers to estimate (all by default).
    strategy : {"auto", "woodbury", "direct"}, default="auto"
        How to solve with ``H - H_S`` (see :func:`group_newton_step`).

    Returns
    -------
    estimate : ndarray of shape (len(group_ids),)
        Estimated change of the target, in its units, when each group is
        removed (positive: removal raises the target).
    """
    backend = state.backend
    if not backend.supports_newton:
        raise ValueError(
            f"method='newton' needs group Hessians, which {type(backend).__name__} "
            "does not provide; use method='second_order' or 'interaction'."
        )
    theta = backend.get_theta()
    ids = range(membership.n_groups) if group_ids is None else group_ids
    out = np.empty(len(ids))
    if hasattr(backend, "prepare_groups"):  # e.g. Dask: all groups in one pass
        backend.prepare_groups(membership)
    for t, g in enumerate(ids):
        rows = membership.members(g)
        q = getattr(backend, "group_removal_gradient", None)
        q = backend.removal_gradients(rows).sum(axis=0) if q is None else q(rows)
        step = group_newton_step(backend, state.solver, rows, q, strategy=strategy)
        out[t] = backend.target_value(theta + step) - state.f0
    if not np.all(np.isfinite(out)):
        raise FloatingPointError(
            "The Newton estimate is not finite for some groups: the target "
            "overflowed at the stepped parameters. Use method='second_order'."
        )
    return out


def _woodbury_cost(P, m):
    # H^{-1} V (two triangular solves), V' H^{-1} V, factor of the m x m system
    return 2.0 * P * P * m + P * m * m + m**3 / 1.5


def _direct_cost(P, n_rows):
    # forming H_S (about P^2 per row for the linear backend) and a Cholesky
    return P**3 / 3.0 + float(P) * P * n_rows


def max_woodbury_rank(P, n_rows):
    """Largest rank ``m`` of ``H_S`` for which the Woodbury solve is cheaper."""
    budget = _direct_cost(P, n_rows)
    lo, hi = 0, 4 * P
    while lo < hi:  # largest m with _woodbury_cost(P, m) <= budget
        mid = (lo + hi + 1) // 2
        if _woodbury_cost(P, mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def group_newton_step(backend, solver, rows, q, *, strategy="auto"):
    """The group-Newton step ``(H - H_S)^{-1} q`` (``H`` damped, as ``solver``'s).

    ``strategy="auto"`` picks the cheaper of a Woodbury (capacitance) solve
    with the already factored ``H`` (when the backend gives a low-rank factor
    of ``H_S``, see :meth:`ModelBackend.group_hessian_factor`; cost about
    ``2 P^2 m`` for a rank-``m`` group Hessian) and a direct Cholesky
    factorisation of ``H - H_S`` (about ``P^3 / 3``). Both are exact; they
    agree to round-off.

    ``solver`` follows :class:`sklearn_groupinf._hessian.HessianSolver`: its
    ``solve(V)`` applies the inverse of the damped Hessian and its ``H`` is
    that matrix, or ``None`` for matrix-free solvers (then only the Woodbury
    solve with a low-rank group Hessian is possible).
    """
    if strategy not in ("auto", "woodbury", "direct"):
        raise ValueError(
            f"strategy must be 'auto', 'woodbury' or 'direct'; got {strategy!r}."
        )
    P = len(q)
    H = solver.H  # the damped Hessian, or None for matrix-free solvers
    factor = None
    if strategy != "direct":
        max_rank = (
            max_woodbury_rank(P, len(rows))
            if (strategy == "auto" and H is not None)
            else None
        )
        try:
            factor = backend.group_hessian_factor(rows, max_rank=max_rank)
        except NotImplementedError:
            factor = None
        if factor is not None:
            V, signs, diag = factor
            if diag is not None and np.any(diag):
                nz = np.flatnonzero(diag)
                D = np.zeros((P, len(nz)))
                D[nz, np.arange(len(nz))] = np.sqrt(np.abs(diag[nz]))
                V = np.hstack([V, D])
                signs = np.concatenate([signs, np.sign(diag[nz])])
            factor = (
                None if (max_rank is not None and V.shape[1] > max_rank) else (V, signs)
            )
        if factor is None and strategy == "woodbury":
            raise ValueError(
                f"strategy='woodbury' needs group_hessian_factor, which "
                f"{type(backend).__name__} does not provide; use strategy='auto'."
            )
    if factor is not None:
        return _woodbury_step(solver, *factor, q, H=H, backend=backend, rows=rows)
    if H is None:
        raise ValueError(
            f"method='newton' needs the dense Hessian or low-rank group Hessians; "
            f"{type(backend).__name__}'s solver provides neither. Use "
            "method='second_order'."
        )
    return _direct_step(H, backend.group_hessian(rows), q)


_NOT_PD = (
    "The Hessian without this group is not positive definite (the group carries "
    "curvature the rest of the data lacks, e.g. a whole class); the Newton step "
    "uses a least-squares solve and may be far off. Add damping to GroupInfluence "
    "or use smaller groups."
)


def _direct_step(H, H_S, q):
    A = H - H_S
    try:
        return sla.cho_solve(
            sla.cho_factor(A, lower=True, overwrite_a=True, check_finite=False), q
        )
    except np.linalg.LinAlgError:
        warnings.warn(_NOT_PD, UserWarning, stacklevel=4)
        return np.linalg.lstsq(H - H_S, q, rcond=None)[0]


def _woodbury_step(solver, V, signs, q, *, H, backend, rows):
    """``(H - V diag(signs) V')^{-1} q = x0 + Y (C - G)^{-1} Y' q``.

    ``x0 = H^{-1} q``, ``Y = H^{-1} V``, ``G = V' Y``, ``C = diag(signs)``.
    ``H - V C V'`` is positive definite exactly when ``C - G`` has as many
    negative eigenvalues as ``C`` (Haynsworth inertia additivity).
    """
    x0 = solver.solve(q)
    if V.shape[1] == 0:
        return x0
    Y = solver.solve(V)
    G = V.T @ Y
    cap = np.diag(signs.astype(np.float64)) - 0.5 * (G + G.T)
    rhs = Y.T @ q
    if np.all(signs > 0):
        try:
            z = sla.cho_solve(sla.cho_factor(cap, lower=True, check_finite=False), rhs)
            return x0 + Y @ z
        except np.linalg.LinAlgError:
            pd = False
    else:
        pd = np.sum(np.linalg.eigvalsh(cap) < 0) == np.sum(signs < 0)
        if pd:
            return x0 + Y @ sla.solve(cap, rhs, assume_a="sym")
    if H is not None:
        return _direct_step(H, backend.group_hessian(rows), q)
    warnings.warn(_NOT_PD, UserWarning, stacklevel=4)
    return x0 + Y @ np.linalg.lstsq(cap, rhs, rcond=None)[0]
