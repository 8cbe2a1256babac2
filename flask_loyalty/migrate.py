"""Alembic integration: apply the extension's migrations in a host project.

The extension ships Alembic revision scripts for its tables in
:data:`~flask_loyalty.migrations.VERSIONS_DIR`, an independent branch labelled
``loyalty`` that runs under the host's own migration environment and shares
its ``alembic_version`` table. With Flask-Migrate::

    from flask_loyalty.migrate import add_version_location

    migrate = Migrate(app, db)
    migrate.configure(add_version_location)

then ``flask db upgrade loyalty@head`` (or ``flask db upgrade heads``)
creates the tables. See ``docs/migrations.rst``.

Needs Alembic (the ``migrations`` extra).

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
import re
import typing as t

from alembic import context
from alembic.config import Config
from alembic.util import coerce_resource_to_filename
from flask import current_app
from flask import has_app_context

from .config import config_value
from .config import DEFAULTS
from .migrations import BRANCH_LABEL
from .migrations import VERSIONS_DIR
from .models import build_models

__all__ = [
    "BRANCH_LABEL",
    "PREFIX_OPTION",
    "VERSIONS_DIR",
    "add_version_location",
    "include_object",
    "table_prefix",
]

#: The Alembic ``-x`` argument and ``[alembic]`` ini option that set the table
#: prefix of a migration run: ``alembic -x loyalty_table_prefix=shop_ upgrade
#: loyalty@head``.
PREFIX_OPTION = "loyalty_table_prefix"

#: Values of Alembic's ``path_separator`` option and the characters they stand for.
_SEPARATORS = {"space": " ", "newline": "\n", "os": os.pathsep, ":": ":", ";": ";"}
#: Alembic 1.16 reads ``path_separator`` (and, deprecated, ``version_path_separator``)
#: and can read its configuration from pyproject.toml; earlier versions only
#: ``version_path_separator``.
_ALEMBIC_116 = hasattr(Config, "get_version_locations_list")
_SEPARATOR_OPTIONS = (
    ("path_separator", "version_path_separator") if _ALEMBIC_116 else ("version_path_separator",)
)


def table_prefix() -> str:
    """The table prefix of the running migration.

    Called by the revision scripts while Alembic runs them. The first of these
    that is set wins:

    1. the ``-x loyalty_table_prefix=...`` argument of the Alembic command;
    2. the ``loyalty_table_prefix`` option of the ``[alembic]`` section of the
       Alembic configuration;
    3. ``LOYALTY_TABLE_PREFIX`` in the config of the current Flask app (the
       app that ``flask db`` runs under with Flask-Migrate);
    4. the default, ``loyalty_``.

    :raises ValueError: if the prefix could not be part of a table name.
    """
    prefix: str | None = context.get_x_argument(as_dictionary=True).get(PREFIX_OPTION)
    if prefix is None:
        prefix = context.config.get_main_option(PREFIX_OPTION)
    if prefix is None and has_app_context():
        prefix = config_value("TABLE_PREFIX", current_app)
    if prefix is None:
        prefix = t.cast(str, DEFAULTS["TABLE_PREFIX"])
    # Validated by the same rule as LOYALTY_TABLE_PREFIX.
    return build_models(prefix).prefix


def add_version_location(config: Config) -> Config:
    """Add :data:`VERSIONS_DIR` to the ``version_locations`` of ``config``.

    The locations already configured are kept; when there are none, the
    default ``<script_location>/versions`` is kept as the first location, so
    the host's own revisions are still found. If the configuration names no
    path separator, ``path_separator = os`` is set (``version_path_separator``
    before Alembic 1.16). Adding the directory twice has no effect. Returns
    ``config``, so that the function can be a Flask-Migrate configure
    callback::

        migrate.configure(add_version_location)

    or be called on a :class:`~alembic.config.Config` built in code before a
    command runs. (The ``alembic`` command line loads the revisions before it
    runs ``env.py``: name the directory in ``alembic.ini`` instead, see
    ``docs/migrations.rst``.)

    :param config: the host's Alembic configuration.
    :raises ValueError: if the configuration has no ``script_location``.
    """
    separator = next(
        (value for option in _SEPARATOR_OPTIONS if (value := config.get_main_option(option)) is not None),
        None,
    )
    locations = _configured_locations(config, separator)
    if not locations:
        # Alembic 1.16 may read it from pyproject.toml too.
        read = getattr(config, "get_alembic_option", config.get_main_option)
        script_location = read("script_location")
        if script_location is None:
            raise ValueError("The Alembic configuration has no script_location.")
        locations = [os.path.join(coerce_resource_to_filename(script_location), "versions")]
    known = {os.path.realpath(location) for location in locations}
    if os.path.realpath(VERSIONS_DIR) not in known:
        locations = [*locations, VERSIONS_DIR]
    if separator is None:
        separator = "os"
        config.set_main_option(_SEPARATOR_OPTIONS[0], separator)
    joined = _SEPARATORS.get(separator, os.pathsep).join(locations)
    config.set_main_option("version_locations", joined.replace("%", "%%"))
    return config


def _configured_locations(config: Config, separator: str | None) -> list[str]:
    """The version locations ``config`` names, split as Alembic splits them."""
    if _ALEMBIC_116:
        return list(t.cast(t.Any, config).get_version_locations_list() or [])
    value = config.get_main_option("version_locations")
    if not value:
        return []
    if separator is None:  # Alembic's legacy splitting
        return [part for part in re.split(r", *| +", value) if part]
    return [part.strip() for part in value.split(_SEPARATORS.get(separator, os.pathsep)) if part.strip()]


def include_object(obj: t.Any, name: str | None, type_: str, reflected: bool, compare_to: t.Any) -> bool:
    """An Alembic ``include_object`` filter that skips the extension's tables.

    :meth:`flask_loyalty.Loyalty.init_app` adds the extension's tables to the
    host's metadata, so the host's autogenerate sees them. Their schema is the
    business of the shipped migrations: pass this filter (with Flask-Migrate,
    ``Migrate(app, db, include_object=include_object)``) so that ``flask db
    migrate`` never copies them into the host's own revisions, even before the
    ``loyalty`` branch is applied or after an upgrade of the extension brings
    new revisions. Call it from your own filter if you have one.

    :returns: ``False`` for the extension's tables and everything on them.
    """
    for candidate in (obj, compare_to):
        table = candidate if type_ == "table" else getattr(candidate, "table", None)
        if table is not None and getattr(table, "info", {}).get("flask_loyalty"):
            return False
    return True
