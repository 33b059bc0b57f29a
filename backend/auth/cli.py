"""``flask auth ...``: operators and tokens from the command line."""
from __future__ import annotations

import getpass
import re
import sys

import click
import sqlalchemy as sa
from flask import Flask
from flask.cli import AppGroup

from .. import audit
from ..cli_errors import database_errors_in_one_line
from ..db.budget import with_budget
from ..extensions import db
from ..models import ROLES, User
from .tokens import MAX_EXPIRES_IN, issue_token, revoke_jti
from .users import create_user, find_user

USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,80}$")
MIN_PASSWORD = 8

auth_cli = AppGroup("auth", help="Manage operators and tokens.")


def _cli_actor() -> str:
    return f"cli:{getpass.getuser()}"


@auth_cli.command("create-user")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="viewer reads health; admin also runs /test and /reconnect.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input, for scripts.")
@database_errors_in_one_line
@with_budget()
def create_user_command(name: str, role: str, password_stdin: bool) -> None:
    """Create an operator who can log in with a password."""
    if not USERNAME.match(name):
        raise click.BadParameter("use 1-80 letters, digits or . _ @ -", param_hint="NAME")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        raise click.ClickException(f"the password must be at least {MIN_PASSWORD} characters")
    if find_user(name) is not None:
        raise click.ClickException(f"user {name!r} already exists")
    create_user(name, password, role)
    audit.record("user_created", "ok", actor=_cli_actor(), target=name, detail={"role": role})
    click.echo(f"created {role} {name!r}", err=True)


@auth_cli.command("issue-token")
@click.argument("identity")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True)
@click.option("--expires-in", type=click.IntRange(1, MAX_EXPIRES_IN), default=None, help="Seconds; default JWT_ACCESS_TOKEN_EXPIRES.")
@with_budget()
def issue_token_command(identity: str, role: str, expires_in: int | None) -> None:
    """Print a token for IDENTITY, alone on stdout (for monitoring and scripts); works with the database down."""
    if not 0 < len(identity) <= 80 or "\x00" in identity:
        raise click.BadParameter("use 1-80 characters", param_hint="IDENTITY")
    token, seconds = issue_token(identity, role, expires_in)
    # A monitoring token is needed most during an outage: the event is logged now and stored later if need be.
    detail = {"role": role, "expires_in": seconds}
    audit.record_or_spool("token_issued", "ok", actor=_cli_actor(), target=identity, detail=detail)
    click.echo(token)


@auth_cli.command("revoke")
@click.argument("jti")
@database_errors_in_one_line
@with_budget()
def revoke_command(jti: str) -> None:
    """Revoke a token by its jti; every worker refuses it within seconds."""
    new = revoke_jti(jti)
    audit.record("token_revoked", "ok" if new else "already_revoked", actor=_cli_actor(), target=jti)
    click.echo(f"revoked {jti}" if new else f"{jti} was already revoked", err=True)


@auth_cli.command("list-users")
@database_errors_in_one_line
@with_budget()
def list_users_command() -> None:
    """List operators with their role and state."""
    for user in db.session.scalars(sa.select(User).order_by(User.username)):
        state = "active" if user.active else "inactive"
        click.echo(f"{user.username}\t{user.role}\t{state}\t{user.created_at:%Y-%m-%d %H:%M}")


def init_app(app: Flask) -> None:
    app.cli.add_command(auth_cli)
