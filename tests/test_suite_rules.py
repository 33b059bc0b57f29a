"""The suite's own rules: under CI=true nothing it needs may be skipped."""
from __future__ import annotations

import pytest

from tests import faults


def outcome_of_looking_for(name: str) -> str:
    try:
        faults.postgres_bin(name)
    except pytest.fail.Exception as error:
        return f"failed: {error}"
    except pytest.skip.Exception as error:
        return f"skipped: {error}"
    return "found"


def test_missing_postgresql_binaries_fail_under_ci_and_skip_elsewhere(monkeypatch):
    monkeypatch.setenv("CI", "true")
    outcome = outcome_of_looking_for("no-such-binary")
    assert outcome.startswith("failed: no-such-binary not found") and "CI=true requires it" in outcome
    monkeypatch.setenv("CI", "")
    assert outcome_of_looking_for("no-such-binary").startswith("skipped: no-such-binary not found")
    assert outcome_of_looking_for("initdb") == "found"
