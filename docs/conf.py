"""Sphinx configuration of the flask-loyalty documentation."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pathlib
import typing as t

from sphinx.util import logging

project = "flask-loyalty"
copyright = "flask-loyalty developers"
author = "flask-loyalty developers"
release = importlib.metadata.version("flask-loyalty")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

# The documentation builds offline and with warnings as errors, so it links to
# no other project's inventory (no intersphinx).
exclude_patterns = ["_build"]
root_doc = "index"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autoclass_content = "class"
viewcode_follow_imported_members = False

# Furo when the "docs" extra installed it, Sphinx's default theme otherwise.
html_theme = "furo" if importlib.util.find_spec("furo") else "alabaster"
html_title = f"flask-loyalty {release}"

_HERE = pathlib.Path(__file__).parent
_logger = logging.getLogger(__name__)


def _check_reference_pages(app: t.Any) -> None:
    """Warn (an error with ``-W``) when a config key, signal or command is undocumented."""
    from flask.cli import AppGroup

    from flask_loyalty import signals
    from flask_loyalty.cli import loyalty_cli
    from flask_loyalty.config import DEFAULTS
    from flask_loyalty.config import PREFIX

    pages = {
        "config.rst": [f".. py:data:: {PREFIX}{key}\n" for key in DEFAULTS],
        "signals.rst": [
            f".. py:data:: {name}\n"
            for name, value in vars(signals).items()
            if not name.startswith("_") and type(value).__name__ == "NamedSignal"
        ],
        "cli.rst": [f"``flask loyalty {name}" for name in t.cast(AppGroup, loyalty_cli).commands],
    }
    for page, needles in pages.items():
        text = (_HERE / page).read_text(encoding="utf-8")
        for needle in needles:
            if needle not in text:
                _logger.warning("%s does not document %r", page, needle.strip())


def setup(app: t.Any) -> None:
    app.connect("builder-inited", _check_reference_pages)
