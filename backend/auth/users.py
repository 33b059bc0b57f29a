"""Operators: stored with hashed passwords, found by name, checked without telling who exists."""
from __future__ import annotations

import functools
import itertools

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


def create_user(username: str, password: str, role: str) -> User:
    """Insert an operator, retried; a retry first looks for the row its lost acknowledgement hid.

    The salted hash is made once, before the first attempt, so a row with this
    name and this very hash can only be our own earlier attempt.
    """
    password_hash = generate_password_hash(password)
    attempts = itertools.count()

    @with_db_retry()
    def insert() -> User:
        if next(attempts):
            landed = db.session.scalar(sa.select(User).where(User.username == username))
            if landed is not None and landed.password_hash == password_hash:
                return landed
        user = User(username=username, password_hash=password_hash, role=role)
        db.session.add(user)
        db.session.commit()
        return user

    return insert()


def check_password(user: User | None, password: str) -> bool:
    """True for an active user with this password; as slow for an unknown user as for a known one."""
    password_ok = check_password_hash(user.password_hash if user else _dummy_hash(), password)
    return user is not None and password_ok and user.active
