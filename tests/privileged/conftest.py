"""Everything in this folder needs root: one named reason for all of it without."""

from __future__ import annotations

import os

import pytest


def pytest_runtest_setup(item: pytest.Item) -> None:
    # CI runs as root (and fails any skip); a developer without root runs
    # `tox -e unit` for the rest.
    if os.geteuid() != 0:
        pytest.skip("tests/privileged needs root (users, namespaces, installed helpers, "
                    "packet sockets); run scripts/test.sh as root, or tox -e unit without")
