"""/api/auth: log in with a password for a token, log out to revoke it."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, current_app, g, request

from .. import audit
from ..auth.revocation import revoke
from ..auth.throttle import throttle_failures
from ..auth.tokens import issue_token, verified_claims
from ..auth.users import check_password, find_user
from ..errors import ApiError, json_object_body

bp = Blueprint("auth", __name__, url_prefix="/api/auth")


@bp.post("/login")
@throttle_failures
def login():
    body = json_object_body()
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise ApiError(400, "bad_request", "username and password are required strings", "Bad request")
    # A name no user can have (NUL, longer than the column) is not looked up: PostgreSQL refuses NUL.
    user = find_user(username) if len(username) <= 80 and "\x00" not in username else None
    if user is not None and user.username != username:
        user = None  # MariaDB's collation matches "ADMIN" and "admin "; a login names its user exactly
    if not check_password(user, password):
        audit.record("login", "denied", actor=username[:80])
        raise ApiError(401, "invalid_credentials", "Invalid username or password", "Login failed")
    token, expires_in = issue_token(user.username, user.role)
    audit.record("login", "ok", actor=user.username, detail={"role": user.role})
    return {
        "success": True,
        "data": {"access_token": token, "token_type": "Bearer", "expires_in": expires_in, "role": user.role},
    }


@bp.post("/logout")
def logout():
    claims = verified_claims(request._get_current_object(), g._get_current_object(), current_app._get_current_object())
    expires_at = datetime.fromtimestamp(claims["exp"], timezone.utc).replace(tzinfo=None)
    revoke(claims["jti"], expires_at)
    audit.record("logout", "ok", actor=claims["sub"], target=claims["jti"])
    return {"success": True, "data": {"revoked": claims["jti"]}}
