"""Tokens with a role: issued, verified once per process, and checked for protected blueprints."""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import Blueprint, Flask, Request, current_app, g, request
from flask_jwt_extended import create_access_token, get_jwt, get_jwt_header, verify_jwt_in_request

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


# Past this an expiry cannot be a date (year 9999): it would never expire, and logout could not store it.
MAX_EXP = 253402300799
CLAIM_WIDTH = {"jti": 64, "sub": 80}  # the widths of revoked_tokens.jti and audit_events.actor


def claims_problem(claims: dict[str, Any]) -> str | None:
    """Why these claims are not acceptable, or None: a token must be able to expire and be revoked.

    Types are checked too, and text a database could not store (NUL, lone
    surrogates, longer than its column) is refused here rather than failing later.
    """
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)) or not 0 < exp <= MAX_EXP:
        return "exp must be a time"
    for name, width in CLAIM_WIDTH.items():
        value = claims.get(name)
        if not isinstance(value, str) or not 0 < len(value) <= width or "\x00" in value:
            return f"{name} must be a string of 1-{width} characters"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{name} must be valid Unicode"
    if not isinstance(claims.get("role"), str) or claims["role"] not in ROLES:
        return f"role must be one of {', '.join(ROLES)}"
    return None


def _remember_in_context(context: Any, header: dict[str, Any], claims: dict[str, Any]) -> None:
    """What verify_jwt_in_request() stores (flask-jwt-extended 4.7) in ``g``, so get_jwt() works on a cached token."""
    context._jwt_extended_jwt_user = {"loaded_user": None}
    context._jwt_extended_jwt_header = header
    context._jwt_extended_jwt = claims
    context._jwt_extended_jwt_location = "headers"


def verified_claims(current: Request, context: Any, app: Flask) -> dict[str, Any]:
    """The request's token claims; raises flask-jwt-extended's errors for a bad token.

    Verifying an HS256 token costs PyJWT about half a millisecond here (it checks
    every base64 character in Python), more than a cached health answer. A token
    byte-for-byte identical to one this process verified with its key needs no
    second signature check; expiry and revocation are still checked every time,
    flask-jwt-extended's request context is filled in as its own verification
    would, and anything else goes through flask-jwt-extended in full. ``current``,
    ``context`` and ``app`` are the request, ``g`` and the app, resolved once by the caller.
    """
    dbhealth = state(app)
    verified = dbhealth.verified_tokens
    header = current.environ.get("HTTP_AUTHORIZATION", "")
    cached = verified.get(header)
    if cached is not None and cached[1]["exp"] > time.time() and not dbhealth.revoked.contains(cached[1]["jti"]):
        _remember_in_context(context, *cached)
        return cached[1]
    try:
        verify_jwt_in_request()
    except (OverflowError, TypeError, ValueError) as error:  # PyJWT on claims such as "exp": 1e999
        raise ApiError(401, "invalid_token", "The token is not valid: unreadable claims", "Invalid token") from error
    claims, jwt_header = get_jwt(), get_jwt_header()
    if len(verified) >= VERIFIED_CACHE_SIZE:
        verified.clear()
    verified[header] = (jwt_header, claims)
    return claims


def protect(blueprint: Blueprint) -> None:
    """Require a valid token on every route of ``blueprint``, and the admin role where marked.

    OPTIONS (a CORS preflight) needs no token, as in flask-jwt-extended: Flask
    answers it with the allowed methods and nothing else.
    """

    @blueprint.before_request
    def _require_token():
        current = request._get_current_object()  # each use of a context proxy resolves it again
        if current.method == "OPTIONS":
            return None
        context, app = g._get_current_object(), current_app._get_current_object()
        claims = verified_claims(current, context, app)
        context.identity = claims["sub"]
        context.role = claims["role"]
        view = app.view_functions.get(current.endpoint)
        needed = getattr(view, "required_role", "viewer")
        if needed == "admin" and context.role != "admin":
            raise ApiError(403, "forbidden", f"This action needs the {needed} role", "Forbidden")


def is_admin() -> bool:
    return getattr(g._get_current_object(), "role", None) == "admin"  # g.get() costs a cached answer 1 us more


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
    jti = payload.get("jti")
    return isinstance(jti, str) and revoked_tokens().contains(jti)


def _claims_acceptable(header: dict, payload: dict) -> bool:
    return claims_problem(payload) is None


def init_app(app: Flask) -> None:
    jwt.unauthorized_loader(_unauthorized)
    jwt.invalid_token_loader(_invalid)
    jwt.expired_token_loader(_expired)
    jwt.revoked_token_loader(_revoked)
    jwt.token_verification_failed_loader(_verification_failed)
    jwt.token_in_blocklist_loader(_is_revoked)
    jwt.token_verification_loader(_claims_acceptable)
