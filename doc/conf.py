"""Sphinx configuration of the sklearn_groupinf documentation.

Build (warning-free, runs the gallery examples):

    .venv/bin/python -m sphinx -W --keep-going -b html doc doc/_build/html

Every page is listed in ``index.rst``; a missing page or an API module that
cannot be imported (e.g. ``sklearn_groupinf.torch`` without torch) is a
warning, so ``-W`` fails the build instead of leaving it out. The API page
lists each module's ``__all__`` (generated/api_sections.rst, written below), so
new public names appear without editing ``api.rst``.
"""

import importlib
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import sklearn_groupinf

project = "sklearn_groupinf"
author = "sklearn_groupinf developers"
copyright = "2026, sklearn_groupinf developers"
version = release = sklearn_groupinf.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "README*", "generated/*.examples", "**.ipynb_checkpoints"]
root_doc = "index"
default_role = "literal"

autodoc_default_options = {"members": True, "inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = "sklearn_groupinf"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_show_sourcelink = False

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "doc_module": ("sklearn_groupinf",),
    "reference_url": {"sklearn_groupinf": None},
    "backreferences_dir": "generated",
    "abort_on_example_error": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "write_computation_times": False,  # no sg_execution_times.rst in doc/
}

# Examples draw with the non-interactive backend and print their numbers.
os.environ.setdefault("MPLBACKEND", "Agg")
# One BLAS thread for the gallery: small matrices; on a busy machine threaded
# OpenBLAS was up to 100x slower on them.
from threadpoolctl import threadpool_limits

_BLAS_LIMIT = threadpool_limits(limits=1, user_api="blas")
warnings.filterwarnings("ignore", message="Matplotlib is currently using agg")

# API page sections: (module, title); each lists the module's ``__all__``.
API_MODULES = [
    ("sklearn_groupinf", "Estimators, results, warnings and errors"),
    (
        "sklearn_groupinf.torch",
        "PyTorch models (``sklearn_groupinf.torch``, needs torch)",
    ),
    (
        "sklearn_groupinf.backends",
        "Model backends, the extension point (``sklearn_groupinf.backends``)",
    ),
    (
        "sklearn_groupinf.evaluation",
        "Evaluation against refits (``sklearn_groupinf.evaluation``)",
    ),
    (
        "sklearn_groupinf.plotting",
        "Plotting (``sklearn_groupinf.plotting``, needs matplotlib)",
    ),
    ("sklearn_groupinf.datasets", "Datasets (``sklearn_groupinf.datasets``)"),
]
_SKIPPED = []
_LISTED = {}


def _public_names(module_name):
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n
            for n, obj in vars(module).items()
            if not n.startswith("_")
            and callable(obj)
            and getattr(obj, "__module__", "") == module_name
        ]
    return [n for n in names if not n.startswith("__")]


def _write_api_sections():
    """Write generated/api_sections.rst (included by api.rst, scanned by
    autosummary so that every listed object gets its page)."""
    out = []
    seen = set()  # an object re-exported by a later module is listed once
    for module_name, title in API_MODULES:
        try:
            names = _public_names(module_name)
        except ImportError as exc:
            _SKIPPED.append(f"{module_name} ({exc})")
            continue
        module = importlib.import_module(module_name)
        names = [n for n in names if id(getattr(module, n, n)) not in seen]
        seen.update(id(getattr(module, n, n)) for n in names)
        _LISTED[module_name] = names
        if not names:
            continue
        out += [
            title,
            "-" * len(title),
            "",
            f".. automodule:: {module_name}",
            "   :no-members:",
            "   :no-index:",
            "",
            f".. currentmodule:: {module_name}",
            "",
            ".. autosummary::",
            "   :toctree: generated",
            "   :template: object.rst",
            "",
        ]
        out += [f"   {name}" for name in names] + [""]
    os.makedirs(os.path.join(HERE, "generated"), exist_ok=True)
    # object pages of names no longer listed would be orphans (a warning)
    listed = {
        f"{module_name}.{name}.rst"
        for module_name, block in _LISTED.items()
        for name in block
    }
    for fname in os.listdir(os.path.join(HERE, "generated")):
        if fname.startswith("sklearn_groupinf.") and fname.endswith(".rst"):
            if fname not in listed:
                os.remove(os.path.join(HERE, "generated", fname))
    path = os.path.join(HERE, "generated", "api_sections.rst")
    text = "\n".join(out)
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as fh:
            fh.write(text)


_write_api_sections()
autosummary_generate = True
exclude_patterns.append("generated/api_sections.rst")


def _generate_api_stubs(app):
    """Object pages for the entries of the included generated/api_sections.rst
    (autosummary only scans documents, and the include is not one)."""
    from sphinx.ext.autosummary.generate import generate_autosummary_docs

    generate_autosummary_docs(
        [os.path.join(HERE, "generated", "api_sections.rst")],
        output_dir=os.path.join(HERE, "generated"),
        base_path=HERE,
        app=app,
    )


def _report_skipped_modules(app):
    """An API module that could not be imported is a warning (fails ``-W``)."""
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    for skipped in _SKIPPED:
        logger.warning(
            f"[sklearn_groupinf] API module {skipped} could not be imported and "
            'is missing from the API page; install the extras: pip install -e ".[docs]"'
        )


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Skip members scikit-learn adds to our classes (``set_fit_request``, ...)."""
    module = getattr(obj, "__module__", None) or ""
    if what == "class" and callable(obj) and not module.startswith("sklearn_groupinf"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign_members)
    app.connect("builder-inited", _generate_api_stubs)
    app.connect("builder-inited", _report_skipped_modules)
