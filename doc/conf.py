"""Sphinx configuration of the sklearn_groupinf documentation.

Build (warning-free, runs the gallery examples):

    .venv/bin/python -m sphinx -W --keep-going -b html doc doc/_build/html

Pages written by other contributors (user guide, evaluation, torch, selector,
benchmark ``results_*`` pages) are listed in ``index.rst``; an optional page
that does not exist yet is left out of the table of contents with an info
message instead of a warning (see ``_prune_missing_pages``). The API page lists
each module's ``__all__`` (``.. api-module::`` lines, expanded below), so new
public names appear without editing ``api.rst``.
"""

import glob
import importlib
import os
import re
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

autosummary_generate = True
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
}

# Examples draw with the non-interactive backend and print their numbers.
os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", message="Matplotlib is currently using agg")

# Optional pages: left out of the toctree while they do not exist (no stubs).
OPTIONAL_PAGES = ("user_guide", "selector", "evaluation", "torch")
_API_MODULE = re.compile(r"^\.\. api-module:: (\S+)(?: (.*))?$", re.M)


def _prune_missing_pages(app, docname, source):
    if docname != "index":
        return
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    text = source[0]
    for page in OPTIONAL_PAGES:
        if not os.path.exists(os.path.join(HERE, f"{page}.rst")):
            logger.info(f"[sklearn_groupinf] doc/{page}.rst not written yet; "
                        "left out of the toctree")
            text = re.sub(rf"^   {page}\n", "", text, flags=re.M)
    results = sorted(glob.glob(os.path.join(HERE, "results_*.rst")))
    if not results:
        logger.info("[sklearn_groupinf] no doc/results_*.rst pages yet")
        text = re.sub(r"^   results_\*\n", "", text, flags=re.M)
    source[0] = text


def _public_names(module_name):
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(module).items() if not n.startswith("_")
                 and callable(obj) and getattr(obj, "__module__", "") == module_name]
    return [n for n in names if not n.startswith("__")]


def _expand_api_modules(app, docname, source):
    """``.. api-module:: mod [Title]`` -> an autosummary of ``mod.__all__``."""
    if docname != "api":
        return
    from sphinx.util import logging

    logger = logging.getLogger(__name__)

    def expand(match):
        module_name, title = match.group(1), match.group(2) or match.group(1)
        try:
            names = _public_names(module_name)
        except ImportError as exc:
            logger.info(f"[sklearn_groupinf] {module_name} not importable ({exc}); "
                        "left out of the API page")
            return ""
        if not names:
            return ""
        lines = [title, "-" * len(title), "", f".. automodule:: {module_name}",
                 "   :no-members:", "   :no-index:", "",
                 f".. currentmodule:: {module_name}", "",
                 ".. autosummary::", "   :toctree: generated/",
                 "   :template: object.rst", ""]
        lines += [f"   {name}" for name in names]
        return "\n".join(lines) + "\n"

    source[0] = _API_MODULE.sub(expand, source[0])


def setup(app):
    app.connect("source-read", _prune_missing_pages)
    app.connect("source-read", _expand_api_modules)
