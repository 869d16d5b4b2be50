"""gprocket._environ in this process, as any user (root and other uids:
tests/privileged/test_environ_untrusted.py; hence this file's name: pytest
needs distinct basenames)."""

from __future__ import annotations

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

