"""The /api/database blueprint, protected once: a token on every route, admin where marked.

Route modules of this package add their routes to ``bp``.
"""
from __future__ import annotations

from flask import Blueprint

from ..auth.tokens import protect

bp = Blueprint("database", __name__, url_prefix="/api/database")
protect(bp)
