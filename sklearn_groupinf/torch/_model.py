"""``TorchModel``: a torch module as a deterministic scikit-learn estimator.

It minimises the sum-form objective of its docstring's Notes, which the torch
backend (:mod:`sklearn_groupinf.backends._torch`) expands. torch is imported
by this module; ``sklearn_groupinf`` imports it lazily.
"""

import copy
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

from . import _training
from ._functional import (
    CLASSIFICATION_LOSSES,
    LOSSES,
    DeviceWarning,
    check_module,
    decay_mask,
    raw_output,
    resolve_torch_device,
    resolve_torch_dtype,
)

__all__ = ["DeviceWarning", "TorchModel"]


class TorchModel(BaseEstimator):
    """A PyTorch module trained deterministically to a stationary point.

    A scikit-learn classifier (``loss="cross_entropy"`` or
    ``"binary_cross_entropy"``) or regressor (``"squared_error"`` or a
    callable) wrapping a ``torch.nn.Module``. ``fit`` trains a deep copy of
    the module (``module_``; the given module is never modified) by
    full-batch L-BFGS on the sum-form objective below, so that refits and
    influence estimates by :class:`sklearn_groupinf.GroupInfluence` use the same
    objective.

    Parameters
    ----------
    module : torch.nn.Module
        The network, already initialised; its weights are the starting point
        of ``fit``. Inputs are the rows of ``X`` (2-D, float); reshape inside
        the module (e.g. ``nn.Unflatten``) for images. The output is the raw
        prediction: logits for classification (one per class, or one for
        binary cross-entropy), predictions for regression.
    loss : {"cross_entropy", "binary_cross_entropy", "squared_error"} or \
            callable, default="cross_entropy"
        Per-example loss ``l``: softmax cross-entropy on class indices, logistic
        loss on one logit, ``1/2 ||y - z||^2``, or ``loss(z, y) -> (n,)`` written
        with torch operations (``z`` of shape ``(n, K)``, ``y`` float). A
        callable loss makes a regressor.
    weight_decay : float, default=0.0
        L2 strength: the penalty is ``weight_decay / 2 * ||theta||^2`` added to
        the **sum** of the per-example losses (not their mean).
    decay_bias : bool, default=True
        Whether parameters named ``*bias`` are decayed. ``False`` matches
        scikit-learn's unpenalised intercept (for softmax outputs the
        objective is then flat along equal shifts of the output biases: pass
        ``damping > 0`` to ``GroupInfluence``).
    optimizer : {"lbfgs", "adam"}, default="lbfgs"
        ``"lbfgs"``: full-batch L-BFGS with a strong-Wolfe line search
        (deterministic). ``"adam"``: minibatch Adam with ``batch_size`` and
        ``lr`` for ``max_epochs`` epochs, followed by full-batch L-BFGS to reach
        a stationary point.
    max_iter : int, default=2000
        Maximum number of L-BFGS iterations.
    tol : float, default=1e-8
        L-BFGS stops when the largest entry of ``grad J / sum_i s_i`` is below
        ``tol``. A ``ConvergenceWarning`` names ``max_iter`` when it is not met.
        (A line search on the objective value stalls near ``sqrt(eps)``, so
        much smaller values are rarely reached in float64;
        :class:`~sklearn_groupinf.GroupInfluence` polishes the parameters
        further with Newton steps when the model is small enough.)
    lr : float, default=1e-3
        Adam learning rate (unused by L-BFGS).
    max_epochs : int, default=100
        Adam epochs (unused by L-BFGS).
    batch_size : int, default=512
        Rows per chunk of every pass over the data: the full-batch objective is
        accumulated chunk by chunk (results do not depend on it beyond
        round-off), per-example gradients for influence are computed
        ``batch_size`` at a time, and it is Adam's minibatch size.
    warm_start : bool, default=False
        Start ``fit`` from the current ``module_`` instead of ``module``.
    curvature : {"hessian", "ggn"}, default="hessian"
        Curvature used by influence estimates: the exact Hessian or the
        generalised Gauss-Newton matrix (positive semi-definite for convex
        losses; equal to the Hessian for linear models). Used by
        ``GroupInfluence(curvature="auto")``; an explicit
        ``GroupInfluence(curvature=...)`` (which also offers ``"kfac"`` and
        ``"ekfac"``, and works for frozen and skorch models alike) overrides
        it.
    hessian_solver : {"auto", "dense", "cg"}, default="auto"
        Dense Cholesky (the ``n_params x n_params`` curvature is formed) or
        matrix-free conjugate gradients on curvature-vector products;
        ``"auto"`` is dense up to 4096 parameters. Non-default values (here
        or in ``curvature``) keep ``GroupInfluence(curvature="auto")`` on the
        exact curvature above that size, where it would otherwise use
        EK-FAC; ``GroupInfluence(curvature_options=...)`` overrides this and
        the ``cg_*`` settings.
    cg_tol : float, default=1e-10
        Relative residual at which conjugate gradients stops.
    cg_max_iter : int, default=1000
        Maximum CG iterations (a warning names it when reached).
    cg_block_size : int, default=64
        Right-hand sides solved together by CG (device memory grows with it).
    device : str or torch.device, default="auto"
        ``"auto"``: CUDA when available, else CPU. ``"cuda"`` without CUDA
        falls back to the CPU with a ``DeviceWarning``.
    dtype : {"float64", "float32"}, default="float64"
        Precision of the parameters and of every influence computation.
    random_state : int or None, default=None
        Seeds torch's generator during ``fit`` (Adam's shuffling and any random
        layer); with the default L-BFGS the fit is deterministic anyway.
    verbose : int, default=0

    Attributes
    ----------
    module_ : torch.nn.Module
        The trained copy of ``module`` (in eval mode, on ``device_``).
    classes_ : ndarray of shape (n_classes,)
        Class labels (classifiers only).
    n_features_in_ : int
    n_iter_ : int
        L-BFGS iterations (plus Adam epochs) run.
    objective_ : float
        ``J`` at the fitted parameters.
    gradient_norm_ : float
        Largest entry of ``grad J / sum_i s_i`` at the fitted parameters.
    device_ : torch.device
    n_params_ : int
        Number of trainable parameters.

    Notes
    -----
    The objective is

    .. math::

        J(\\theta) = \\sum_i s_i\\, \\ell(y_i, z_i(\\theta))
            + \\tfrac{\\lambda}{2} \\lVert \\theta_D \\rVert^2 .

    With ``nn.Linear`` and ``weight_decay = 1/C, decay_bias=False`` this is
    ``LogisticRegression(C=C)``'s objective divided by ``C`` (same minimiser,
    same influences). Training runs in ``eval()`` mode: dropout is off and
    batch-norm statistics are not updated, so the objective is a
    deterministic function of the parameters.

    Examples
    --------
    >>> import torch
    >>> from sklearn.datasets import load_iris
    >>> from sklearn_groupinf.torch import TorchModel
    >>> X, y = load_iris(return_X_y=True)
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = TorchModel(torch.nn.Linear(4, 3), weight_decay=1.0, device="cpu")
    >>> net.fit(X, y).score(X, y) > 0.9
    True
    >>> net.predict_proba(X[:2]).shape
    (2, 3)
    """

    _parameter_constraints = {
        "module": [torch.nn.Module],
        "loss": [StrOptions(set(LOSSES)), callable],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "decay_bias": ["boolean"],
        "optimizer": [StrOptions({"lbfgs", "adam"})],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "max_epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "warm_start": ["boolean"],
        "curvature": [StrOptions({"hessian", "ggn"})],
        "hessian_solver": [StrOptions({"auto", "dense", "cg"})],
        "cg_tol": [Interval(numbers.Real, 0, None, closed="neither")],
        "cg_max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "cg_block_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "device": [str, torch.device, None],
        "dtype": [StrOptions({"float64", "float32"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        module,
        *,
        loss="cross_entropy",
        weight_decay=0.0,
        decay_bias=True,
        optimizer="lbfgs",
        max_iter=2000,
        tol=1e-8,
        lr=1e-3,
        max_epochs=100,
        batch_size=512,
        warm_start=False,
        curvature="hessian",
        hessian_solver="auto",
        cg_tol=1e-10,
        cg_max_iter=1000,
        cg_block_size=64,
        device="auto",
        dtype="float64",
        random_state=None,
        verbose=0,
    ):
        self.module = module
        self.loss = loss
        self.weight_decay = weight_decay
        self.decay_bias = decay_bias
        self.optimizer = optimizer
        self.max_iter = max_iter
        self.tol = tol
        self.lr = lr
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.warm_start = warm_start
        self.curvature = curvature
        self.hessian_solver = hessian_solver
        self.cg_tol = cg_tol
        self.cg_max_iter = cg_max_iter
        self.cg_block_size = cg_block_size
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    # ----------------------------------------------------------------- tags
    @property
    def _is_classifier(self):
        return isinstance(self.loss, str) and self.loss in CLASSIFICATION_LOSSES

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, RegressorTags

        tags = super().__sklearn_tags__()
        if self._is_classifier:
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags(
                multi_class=self.loss == "cross_entropy"
            )
        else:
            tags.estimator_type = "regressor"
            tags.regressor_tags = RegressorTags()
            tags.target_tags.multi_output = True
        tags.target_tags.required = True
        tags.non_deterministic = self.optimizer != "lbfgs"
        return tags

    # ------------------------------------------------------------ encoding
    def _tensor(self, A, dtype=None):
        return torch.as_tensor(
            np.ascontiguousarray(A),
            dtype=self.dtype_ if dtype is None else dtype,
            device=self.device_,
        )

    def _encode_y(self, y):
        """Labels as the tensor the loss takes."""
        y = np.asarray(y)
        if self.loss == "cross_entropy":
            idx = np.searchsorted(self.classes_, y)
            return self._tensor(idx, torch.long)
        if self.loss == "binary_cross_entropy":
            return self._tensor((y == self.classes_[1]).astype(np.float64))
        return self._tensor(np.asarray(y, dtype=np.float64))

    def _check_X(self, X):
        """Rows for prediction: the training columns (number and names)."""
        return validate_data(self, X, reset=False, dtype=np.float64, allow_nd=True)

    # -------------------------------------------------------------- fitting
    def _params(self):
        return _training.trainable(self)

    def fit(self, X, y, sample_weight=None):
        """Train a copy of ``module`` to a stationary point of the objective.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None
            Weights ``s_i`` of the per-example losses (0 removes an example).

        Returns
        -------
        self : TorchModel
        """
        self._validate_params()
        X, y = validate_data(
            self,
            X,
            y,
            dtype=np.float64,
            allow_nd=True,
            multi_output=not self._is_classifier,
            y_numeric=not self._is_classifier,
        )
        self.n_features_in_ = X.shape[1]
        sw = _check_sample_weight(sample_weight, X, ensure_non_negative=True)
        if sw.sum() <= 0:
            raise ValueError("sample_weight sums to zero; give some weight.")
        self.device_ = resolve_torch_device(self.device)
        self.dtype_ = resolve_torch_dtype(self.dtype)
        if self._is_classifier:
            check_classification_targets(y)
            y_type = type_of_target(y, input_name="y")
            if self.loss == "binary_cross_entropy" and y_type != "binary":
                raise ValueError(
                    "Only binary classification is supported with loss="
                    f"'binary_cross_entropy'. The type of the target is {y_type}; "
                    "use loss='cross_entropy'."
                )
            classes = np.unique(y)
            if self.warm_start and hasattr(self, "classes_"):
                classes = np.union1d(self.classes_, classes)
            if self.loss == "binary_cross_entropy" and len(classes) != 2:
                raise ValueError(
                    f"loss='binary_cross_entropy' needs exactly 2 classes; y has "
                    f"{len(classes)} class{'es' if len(classes) != 1 else ''}."
                )
            self.classes_ = classes
        s_sum = float(sw.sum())
        devices = [self.device_] if self.device_.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            seed = _training.seed_of(self.random_state)
            if seed is not None:
                torch.manual_seed(seed)
            if not (self.warm_start and hasattr(self, "module_")):
                self.module_ = copy.deepcopy(self.module)
            self.module_.to(device=self.device_, dtype=self.dtype_)
            self.module_.eval()
            check_module(self, X, y)  # also initialises lazy modules
            named = [
                (k, p) for k, p in self.module_.named_parameters() if p.requires_grad
            ]
            if not named:
                raise ValueError("module has no trainable parameters (requires_grad).")
            self._mask = decay_mask(named, self.decay_bias)
            self.n_params_ = int(sum(p.numel() for _, p in named))
            Xt, yt, st = self._tensor(X), self._encode_y(y), self._tensor(sw)
            n_iter = 0
            if self.optimizer == "adam":
                n_iter += _training.fit_adam(self, Xt, yt, st, s_sum)
            n_iter += _training.fit_lbfgs(self, Xt, yt, st, s_sum)
        self.n_iter_ = n_iter
        self.gradient_norm_ = _training.max_grad(self, Xt, yt, st, s_sum)
        for p in self._params():
            p.grad = None
        self.objective_ = _training.objective_and_grad(self, Xt, yt, st, backward=False)
        if not np.isfinite(self.objective_):
            raise FloatingPointError(
                "Training diverged: the objective is not finite. Scale the inputs, "
                "raise weight_decay or use float64."
            )
        if self.gradient_norm_ > self.tol:
            warnings.warn(
                f"{type(self).__name__} did not reach a stationary point: the "
                f"largest gradient entry of J / sum(s) is {self.gradient_norm_:.2g} "
                f"> tol={self.tol:g} after {self.n_iter_} iterations. Increase "
                f"max_iter (now {self.max_iter}) or weight_decay; influence "
                "estimates assume a stationary point.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    # ------------------------------------------------------------ predicting
    def _raw(self, X):
        check_is_fitted(self, "module_")
        X = self._check_X(X)
        Xt = self._tensor(X)
        outs = []
        with torch.no_grad():
            for i0 in range(0, X.shape[0], self.batch_size):
                outs.append(raw_output(self.module_, Xt[i0 : i0 + self.batch_size]))
        z = torch.cat(outs) if outs else torch.zeros((0, 1), dtype=self.dtype_)
        return z.detach().cpu().numpy().astype(np.float64)

    @available_if(lambda self: self._is_classifier)
    def decision_function(self, X):
        """Logits ``(n, K)``, or ``(n,)`` for one logit (classifiers only)."""
        z = self._raw(X)
        return z[:, 0] if z.shape[1] == 1 else z

    def predict(self, X):
        """Class labels (classifiers) or predictions (regressors) as numpy."""
        z = self._raw(X)
        if self.loss == "cross_entropy":
            return self.classes_[np.argmax(z, axis=1)]
        if self.loss == "binary_cross_entropy":
            return self.classes_[(z[:, 0] > 0).astype(int)]
        return z[:, 0] if z.shape[1] == 1 else z

    @available_if(lambda self: self._is_classifier)
    def predict_proba(self, X):
        """Class probabilities ``(n, n_classes)``."""
        z = self._raw(X)
        if self.loss == "binary_cross_entropy":
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.column_stack([1 - p, p])
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def score(self, X, y, sample_weight=None):
        """Accuracy (classifiers) or R^2 (regressors)."""
        from sklearn.metrics import accuracy_score, r2_score

        if self._is_classifier:
            return accuracy_score(y, self.predict(X), sample_weight=sample_weight)
        return r2_score(y, self.predict(X), sample_weight=sample_weight)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "module_")
