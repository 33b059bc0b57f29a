"""Command-line commands fail in one line: a database that cannot be reached is not a traceback.

Used by ``flask auth`` directly and wrapped around Flask-Migrate's ``flask db``
commands by the factory, so every command that needs the database says what
went wrong in one line and exits 1 (SPEC 4).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from flask import has_app_context
from sqlalchemy.exc import SQLAlchemyError

from .db.classify import is_transient
from .db.deadline import DeadlineExceeded
from .db.urls import scrub_secrets


def database_errors_in_one_line(command: Callable[..., Any]) -> Callable[..., Any]:
    """A command whose database work fails says why in one line and exits 1, never with a traceback."""
    if getattr(command, "_one_line_errors", False):
        return command

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DeadlineExceeded:
            raise click.ClickException("cannot reach the database: no answer in time") from None
        except SQLAlchemyError as error:
            cause = getattr(error, "orig", None) or error
            text = " ".join(str(cause).split()) or type(cause).__name__
            if has_app_context():
                text = scrub_secrets(text)
            what = "cannot reach the database" if is_transient(error) else "database error"
            raise click.ClickException(f"{what}: {text}") from None

    wrapper._one_line_errors = True  # type: ignore[attr-defined]
    return wrapper


def guard_group(group: click.Group) -> None:
    """Give every command of a group (Flask-Migrate's ``db``) one-line database errors, once."""
    for command in group.commands.values():
        if command.callback is not None:
            command.callback = database_errors_in_one_line(command.callback)
