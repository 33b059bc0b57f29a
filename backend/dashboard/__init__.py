"""The status page (SPEC section 12): one HTML page and its assets, every byte served by the app.

The page itself needs no token: it asks for one (a login or a pasted token) and
fetches the data from the API with it. No build step and no CDN: the scripts
are plain ES modules in ``static/``. A strict Content-Security-Policy lets the
page run only this origin's scripts and styles (no inline script or style, no
eval) and talk only to this origin, and no other site may frame it.
"""
from __future__ import annotations

from flask import Blueprint, Response, render_template

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/dashboard/static",
)

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; object-src 'none'; frame-ancestors 'none'"
)


@bp.get("/dashboard")
def page():
    """The page shell; the data comes later, from the API, with the user's token."""
    return render_template("dashboard/index.html")


@bp.after_request
def security_headers(response: Response) -> Response:
    """The page and its assets: this origin only, never framed, never sniffed, no referrer."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-cache")
    return response
