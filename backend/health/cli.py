"""``flask dbhealth check``: the health of the databases as an exit status, for scripts."""
from __future__ import annotations

import json
import sys

import click
from flask import Flask
from flask.cli import AppGroup

from .monitor import monitor

EXIT_CODES = {"healthy": 0, "degraded": 1, "unhealthy": 2}
EXIT_MISCONFIGURED = 3

dbhealth_cli = AppGroup("dbhealth", help="Check the databases from the command line.")


@dbhealth_cli.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the health data as JSON.")
@click.option("--force", is_flag=True, help="Accepted for symmetry with ?force=true; changes nothing: the command always probes (it has no cache).")
def check_command(as_json: bool, force: bool) -> None:
    """Probe the databases; exit 0 healthy, 1 degraded, 2 unhealthy, 3 misconfigured."""
    monitor().shares = False  # a command is not one of the instance's workers: its result is its own
    snapshot, _ = monitor().health(force=True)
    if as_json:
        click.echo(json.dumps(snapshot, indent=2, default=str))
    else:
        parts = [f"{name} {c['status']} ({c['response_time_ms']} ms)" for name, c in snapshot["components"].items()]
        click.echo(f"{snapshot['status']}: {snapshot['message']} [{', '.join(parts)}]")
    if any(component.get("misconfigured") for component in snapshot["components"].values()):
        sys.exit(EXIT_MISCONFIGURED)  # a setting to fix, wherever it is: not an outage
    sys.exit(EXIT_CODES[snapshot["status"]])


def init_app(app: Flask) -> None:
    app.cli.add_command(dbhealth_cli)
