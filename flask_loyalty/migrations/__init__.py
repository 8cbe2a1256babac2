"""Alembic version scripts for the extension's tables.

This directory is an Alembic *version location*, not an Alembic environment:
it holds revision scripts only and runs under the host project's own
``env.py`` (Flask-Migrate's, or a plain Alembic one). Its revisions form an
independent branch labelled :data:`BRANCH_LABEL` that shares the host's
``alembic_version`` table. Add :data:`VERSIONS_DIR` to the host's
``version_locations`` (:func:`flask_loyalty.migrate.add_version_location`
does it) and upgrade with ``flask db upgrade loyalty@head``.

Alembic loads every ``.py`` file here except this one as a revision script,
so helpers belong in :mod:`flask_loyalty.migrate`. See ``docs/migrations.rst``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import os

#: The absolute path of this directory: the version location to add to the
#: host's Alembic configuration.
VERSIONS_DIR: str = os.path.dirname(os.path.abspath(__file__))

#: The branch label every revision of the extension carries, so that
#: ``loyalty@head`` names the extension's newest revision.
BRANCH_LABEL = "loyalty"

__all__ = ["BRANCH_LABEL", "VERSIONS_DIR"]
