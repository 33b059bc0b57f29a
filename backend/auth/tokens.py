"""Tokens with a role: issued, verified once per process, and checked for protected blueprints."""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import Blueprint, Flask, current_app, g, request
from flask_jwt_extended import create_access_token, get_jwt, verify_jwt_in_request

from ..errors import ApiError, error_body
from ..extensions import jwt
from ..models import ROLES, utcnow
from ..state import state
from .revocation import revoke, revoked_tokens

MAX_EXPIRES_IN = 366 * 24 * 3600


def issue_token(identity: str, role: str, expires_in: int | None = None) -> tuple[str, int]:
    """A signed access token carrying ``role``; returns (token, seconds until it expires)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    seconds = expires_in or int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds())
    token = create_access_token(
        identity=identity, additional_claims={"role": role}, expires_delta=timedelta(seconds=seconds)
    )
    return token, seconds


def revoke_jti(jti: str) -> bool:
    """Revoke a token known only by its jti (from the CLI): kept until any token could expire."""
    return revoke(jti, utcnow() + timedelta(seconds=MAX_EXPIRES_IN))


def admin_only(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a view of a protected blueprint as admin-only."""
    view.required_role = "admin"  # type: ignore[attr-defined]
    return view


VERIFIED_CACHE_SIZE = 1024


def verified_claims() -> dict[str, Any]:
    """The request's token claims; raises flask-jwt-extended's errors for a bad token.

    Verifying an HS256 token costs PyJWT about half a millisecond here (it checks
    every base64 character in Python), more than a cached health answer. A token
    byte-for-byte identical to one this process verified with its key needs no
    second signature check; expiry and revocation are still checked every time,
    and anything else goes through flask-jwt-extended in full.
    """
    verified = state().verified_tokens
    header = request.headers.get("Authorization", "")
    claims = verified.get(header)
    if claims is None or claims["exp"] <= time.time() or revoked_tokens().contains(claims["jti"]):
        verify_jwt_in_request()
        claims = get_jwt()
        if len(verified) >= VERIFIED_CACHE_SIZE:
            verified.clear()
        verified[header] = claims
    return claims


def protect(blueprint: Blueprint) -> None:
    """Require a valid token on every route of ``blueprint``, and the admin role where marked."""

    @blueprint.before_request
    def _require_token():
        claims = verified_claims()
        g.identity = claims.get("sub")
        g.role = claims.get("role")
        view = current_app.view_functions.get(request.endpoint)
        needed = getattr(view, "required_role", "viewer")
        if g.role not in ROLES or (needed == "admin" and g.role != "admin"):
            raise ApiError(403, "forbidden", f"This action needs the {needed} role", "Forbidden")


def is_admin() -> bool:
    return g.get("role") == "admin"


def _unauthorized(reason: str):
    return error_body("auth_required", "A bearer token is required: Authorization: Bearer <token>", "Authentication required"), 401


def _invalid(reason: str):
    return error_body("invalid_token", f"The token is not valid: {reason}", "Invalid token"), 401


def _expired(header: dict, payload: dict):
    return error_body("token_expired", "The token has expired", "Token expired"), 401


def _revoked(header: dict, payload: dict):
    return error_body("token_revoked", "The token has been revoked", "Token revoked"), 401


def _verification_failed(header: dict, payload: dict):
    return error_body("invalid_token", "The token failed verification", "Invalid token"), 401


def _is_revoked(header: dict, payload: dict) -> bool:
    return revoked_tokens().contains(payload["jti"])


def init_app(app: Flask) -> None:
    jwt.unauthorized_loader(_unauthorized)
    jwt.invalid_token_loader(_invalid)
    jwt.expired_token_loader(_expired)
    jwt.revoked_token_loader(_revoked)
    jwt.token_verification_failed_loader(_verification_failed)
    jwt.token_in_blocklist_loader(_is_revoked)
