"""gprocket._environ in this process (other uids: tests/privileged/test_environ.py)."""

from __future__ import annotations

import os

import pytest

from gprocket import _environ


def test_this_process_was_not_started_secure() -> None:
    # pytest is not set-id and has no file capabilities: AT_SECURE is 0 in auxv.
    assert _environ._at_secure() is False


def test_unset_or_blank_variables_read_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPROCKET_HELPER", raising=False)
    assert _environ.trusted_getenv("GPROCKET_HELPER") is None
    monkeypatch.setenv("GPROCKET_HELPER", "  ")
    assert _environ.trusted_getenv("GPROCKET_HELPER") is None
    assert _environ.ignored() == ()


def test_root_ignores_the_guarded_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("shows the euid 0 case; other uids run in tests/privileged/test_environ.py")
    monkeypatch.setenv("GPROCKET_HELPER", "/nowhere/helper")
    monkeypatch.delenv("GPROCKET_STRATEGIES", raising=False)
    assert _environ.privilege_reason() == "it runs with effective uid 0"
    assert _environ.trusted_getenv("GPROCKET_HELPER") is None
    assert _environ.ignored() == (
        "GPROCKET_HELPER='/nowhere/helper' ignored because it runs with effective uid 0: "
        "pass helper= explicitly",)
