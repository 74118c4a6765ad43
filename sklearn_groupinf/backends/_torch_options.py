"""The curvature settings of torch models, checked without importing torch.

``GroupInfluence(curvature=..., curvature_options=..., target_rank=...)``
choose how the torch backend approximates the training curvature
(:func:`~sklearn_groupinf.backends._torch_factory.resolve_curvature` turns
them into backend options); :func:`check_curvature_options` validates them
at ``fit`` before any model is trained.
"""

import numbers

#: The values of ``GroupInfluence(curvature=...)``.
CURVATURES = ("auto", "exact", "ggn", "kfac", "ekfac")

#: ``curvature="auto"`` uses EK-FAC for torch models with more trainable
#: parameters than this: the largest the dense exact solver forms
#: (``TorchModel(hessian_solver="auto")``); up to it, the exact curvature.
AUTO_KFAC_PARAMS = 4096

#: Default rank of the low-rank target Gauss-Newton factor (``target_rank``)
#: of K-FAC / EK-FAC, from ``benchmarks/kfac_target_rank.py``.
DEFAULT_TARGET_RANK = 64


#: Default rows of EK-FAC's eigenvalue correction (``correction_rows``): a
#: seeded uniform sample of that many training rows (every row when there
#: are fewer), from ``benchmarks/kfac_sample_rows.py``.
DEFAULT_CORRECTION_ROWS = 2000

#: Default rows of the Kronecker factors of K-FAC / EK-FAC (``factor_rows``):
#: a seeded uniform sample of that many training rows (every row when there
#: are fewer), from ``benchmarks/kfac_sample_rows.py``.
DEFAULT_FACTOR_ROWS = 2000


def _positive_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1


#: ``curvature_options`` keys: (curvatures they apply to, default, check,
#: what the check wants). Default ``None``: the ``TorchModel``'s own value.
CURVATURE_OPTIONS = {
    "hessian_solver": (
        ("exact", "ggn"),
        None,
        lambda v: v in ("auto", "dense", "cg"),
        "one of 'auto', 'dense', 'cg'",
    ),
    "cg_tol": (
        ("exact", "ggn"),
        None,
        lambda v: isinstance(v, numbers.Real) and 0 < v < 1,
        "a number in (0, 1)",
    ),
    "cg_max_iter": (("exact", "ggn"), None, _positive_int, "an int >= 1"),
    "cg_block_size": (
        ("exact", "ggn", "kfac", "ekfac"),
        None,
        _positive_int,
        "an int >= 1",
    ),
    "batch_size": (
        ("exact", "ggn", "kfac", "ekfac"),
        None,
        _positive_int,
        "an int >= 1",
    ),
    "fisher": (
        ("kfac", "ekfac"),
        "exact",
        lambda v: v in ("exact", "sampled"),
        "'exact' or 'sampled'",
    ),
    "n_draws": (("kfac", "ekfac"), 1, _positive_int, "an int >= 1"),
    "correction_rows": (("ekfac",), None, _positive_int, "an int >= 1"),
    "factor_rows": (("kfac", "ekfac"), None, _positive_int, "an int >= 1"),
    "target_sketch": (
        ("kfac", "ekfac"),
        "shifts",
        lambda v: v in ("shifts", "plain"),
        "'shifts' or 'plain'",
    ),
    "random_state": (
        ("kfac", "ekfac"),
        0,
        lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
        "an int",
    ),
}


def check_curvature_options(curvature, options, *, torch_model, estimator_name):
    """Raise ``ValueError`` for settings that cannot apply.

    Parameters
    ----------
    curvature : str
    options : dict or None
    torch_model : bool
        Whether the final estimator is a torch model (``TorchModel``, skorch).
    estimator_name : str
        For the messages.
    """
    if not torch_model:
        if curvature not in ("auto", "exact"):
            raise ValueError(
                f"curvature={curvature!r} applies to torch models only; "
                f"{estimator_name} always uses its exact Hessian (its parameters "
                "are few enough to form it). Use curvature='auto' or 'exact'."
            )
        if options:
            raise ValueError(
                f"curvature_options={options!r} applies to torch models only; "
                f"{estimator_name} uses its exact Hessian. Pass "
                "curvature_options=None."
            )
        return
    for key, value in (options or {}).items():
        if key not in CURVATURE_OPTIONS:
            raise ValueError(
                f"curvature_options has an unknown key {key!r}; the keys are "
                f"{', '.join(map(repr, CURVATURE_OPTIONS))}."
            )
        applies, _, check, wants = CURVATURE_OPTIONS[key]
        if not check(value):
            raise ValueError(
                f"curvature_options[{key!r}] must be {wants}, got {value!r}."
            )
        if curvature != "auto" and curvature not in applies:
            raise ValueError(
                f"curvature_options[{key!r}] does not apply to curvature="
                f"{curvature!r} (only to {', '.join(map(repr, applies))}). Remove "
                "it, or choose one of those curvatures."
            )
