"""Operators: stored with hashed passwords, found by name, checked without telling who exists."""
from __future__ import annotations

import functools

import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from ..db.retry import with_db_retry
from ..extensions import db
from ..models import User


@functools.cache
def _dummy_hash() -> str:
    """A hash to check against when the user does not exist, so timing does not tell."""
    return generate_password_hash("not a real password")


@with_db_retry()
def find_user(username: str) -> User | None:
    return db.session.scalar(sa.select(User).where(User.username == username))


@with_db_retry()
def create_user(username: str, password: str, role: str) -> User:
    user = User(username=username, password_hash=generate_password_hash(password), role=role)
    db.session.add(user)
    db.session.commit()
    return user


def check_password(user: User | None, password: str) -> bool:
    """True for an active user with this password; as slow for an unknown user as for a known one."""
    password_ok = check_password_hash(user.password_hash if user else _dummy_hash(), password)
    return user is not None and password_ok and user.active
