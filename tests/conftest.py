"""Fixtures shared by the whole suite: users, namespaces, installed helpers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from support import privileged as priv


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "privileged: runs real other-uid processes; needs root")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None],
) -> Generator[None, pytest.TestReport, None]:
    """On CI (root, every tool installed) a skip can only hide a fault: fail it."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped on CI, where nothing may skip: {report.longrepr}"


def _need_root() -> None:
    # CI runs as root; a developer running without root gets one named reason.
    if os.geteuid() != 0:
        pytest.skip("needs root to create users, namespaces and install helpers")


@pytest.fixture(scope="session")
def unpriv_user() -> priv.User:
    """An unprivileged user in the group 'gprocket' that can run the venv."""
    _need_root()
    priv.ensure_group(priv.TEST_GROUP)
    user = priv.ensure_user(priv.UNPRIV_USER, groups=[priv.TEST_GROUP])
    proc = priv.run_python(user, "import gprocket, sys; print(sys.executable)")
    assert proc.returncode == 0, (
        f"{user.name} cannot run {priv.VENV_PYTHON} with gprocket importable from "
        f"{priv.python_path()}: put the venv and the package where other users can "
        f"read them\n{proc.stderr}")
    return user


@pytest.fixture(scope="session")
def other_user() -> priv.User:
    """An unprivileged user outside the group 'gprocket'."""
    _need_root()
    return priv.ensure_user(priv.OTHER_USER)


@pytest.fixture
def netns() -> Iterator[priv.Netns]:
    _need_root()
    with priv.make_netns() as ns:
        yield ns


@pytest.fixture
def installed_helper() -> Iterator[Callable[..., Path]]:
    """Factory: installed_helper(mode='caps'|'setuid', policy=None) -> helper path."""
    _need_root()
    with ExitStack() as stack:
        def install(mode: str = "caps", policy: str | None = None,
                    group: str = priv.TEST_GROUP) -> Path:
            return stack.enter_context(priv.install_helper(mode, policy, group))
        yield install


@pytest.fixture
def caps_python() -> Iterator[Callable[..., str]]:
    """Factory: an interpreter copy with permitted-only file capabilities."""
    _need_root()
    with ExitStack() as stack:
        def make(caps: str = "cap_net_bind_service,cap_net_raw+p") -> str:
            return stack.enter_context(priv.caps_python(caps))
        yield make


@pytest.fixture(scope="session", autouse=True)
def _remove_examples_copy() -> Iterator[None]:
    """The world-readable examples copy (made for a clone under /root) goes at the end."""
    yield
    if priv.INSTALL_ROOT in priv.EXAMPLES.parents:
        shutil.rmtree(priv.EXAMPLES, ignore_errors=True)
