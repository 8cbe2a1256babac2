"""The extension objects, created once and bound to each app in :func:`create_app`."""

from __future__ import annotations

from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect

from flask_loyalty import Loyalty

db = SQLAlchemy()
loyalty = Loyalty(db=db)
login_manager = LoginManager()
csrf = CSRFProtect()
