"""GPROCKET_HELPER and GPROCKET_STRATEGIES are ignored by a privileged process.

Issue 12, finding 7: a process holding a capability honoured them, so whoever
set its environment chose the program it ran and the rungs it used. The
attack runs as another uid with a permitted capability (an interpreter copy
with file capabilities) and a fake helper that leaves a mark when run.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import privileged as priv

from gprocket import _environ

pytestmark = pytest.mark.privileged

CODE = """
import json, gprocket
from gprocket._environ import ignored
from gprocket._channel.helper import locate
try:
    located = locate()
except Exception:
    located = None
try:
    sock = gprocket.open(53, protocol="udp", ip="127.0.0.1")
    rung = sock.rung
    sock.close()
except Exception as err:
    rung = type(err).__name__ + ": " + str(err)
print(json.dumps(dict(located=located, rung=rung, ignored=ignored())))
"""


@pytest.fixture
def fake_helper() -> Iterator[tuple[Path, Path]]:
    """A program posing as the helper that leaves a mark when it runs."""
    root = priv.install_root() / f"fake-{secrets.token_hex(4)}"
    root.mkdir(mode=0o755)
    marks = root / "marks"
    marks.mkdir()
    marks.chmod(0o777)  # the test user leaves its mark here
    fake = root / "gprocket-helper"
    fake.write_text(f"#!/bin/sh\ntouch {marks}/ran\n")
    fake.chmod(0o755)
    # File capabilities (inert on a script) make the ladder willing to run it,
    # as it would run a real helper.
    subprocess.run(["setcap", "cap_net_bind_service+p", str(fake)], check=True)
    try:
        yield fake, marks / "ran"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(user: priv.User, netns: priv.Netns, fake: Path, python: str | None,
        ambient_caps: tuple[str, ...] = ()) -> dict[str, object]:  # fmt: skip
    env = {"GPROCKET_HELPER": str(fake), "GPROCKET_STRATEGIES": "helper"}
    result: dict[str, object] = priv.run_json(user, CODE, netns=netns, env=env, python=python,
                                              ambient_caps=ambient_caps)  # fmt: skip
    return result


@pytest.mark.parametrize(
    ("how", "why"),
    [
        # An interpreter copy with file capabilities: permitted caps and AT_SECURE.
        ("file", "it was started set-id or with file capabilities (AT_SECURE)"),
        # Ambient capabilities: no AT_SECURE, the capability sets say it.
        ("ambient", "it holds effective capabilities"),
    ],
)
def test_attack_a_process_with_a_capability_ignores_them(  # noqa: PLR0917
    how: str, why: str, unpriv_user: priv.User, netns: priv.Netns,
    fake_helper: tuple[Path, Path], caps_python: Callable[..., str],
) -> None:
    fake, mark = fake_helper
    python = caps_python("cap_net_bind_service+p") if how == "file" else priv.VENV_PYTHON
    ambient = ("cap_net_bind_service",) if how == "ambient" else ()
    result = run(unpriv_user, netns, fake, python, ambient)
    assert not mark.exists(), "the fake helper ran in a privileged process"
    assert result["located"] != str(fake)
    assert result["rung"] == "capabilities"  # the default ladder, not "helper"
    ignored = result["ignored"]
    assert isinstance(ignored, list) and len(ignored) == 2
    assert ignored[0].startswith(f"GPROCKET_HELPER='{fake}' ignored because {why}"), ignored
    doctor = priv.run_argv(unpriv_user, [python, "-m", "gprocket.cli", "doctor", "--no-sudo"],
                           netns=netns, env={"GPROCKET_HELPER": str(fake)},
                           ambient_caps=ambient)  # fmt: skip
    assert doctor.returncode == 0, doctor.stderr
    assert f"note: GPROCKET_HELPER='{fake}' ignored because {why}" in doctor.stdout


def test_an_unprivileged_process_uses_them(
    unpriv_user: priv.User, netns: priv.Netns, fake_helper: tuple[Path, Path]
) -> None:
    fake, mark = fake_helper
    result = run(unpriv_user, netns, fake, None)
    assert result["located"] == str(fake)
    assert mark.exists()
    assert isinstance(result["rung"], str) and str(fake) in result["rung"], result
    assert result["ignored"] == []


def test_root_ignores_them(netns: priv.Netns, fake_helper: tuple[Path, Path]) -> None:
    fake, mark = fake_helper
    env = {**priv.user_env({"GPROCKET_HELPER": str(fake), "GPROCKET_STRATEGIES": "helper"})}
    done = netns.exec([priv.VENV_PYTHON, "-c", CODE], env=env)
    result = json.loads(done.stdout.splitlines()[-1])
    assert not mark.exists()
    assert result["rung"] == "plain"
    assert "because it runs with effective uid 0" in result["ignored"][0]


def test_root_ignores_the_guarded_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    # In this (root) process; root in another process: test_root_ignores_them.
    monkeypatch.setenv("GPROCKET_HELPER", "/nowhere/helper")
    monkeypatch.delenv("GPROCKET_STRATEGIES", raising=False)
    assert _environ.privilege_reason() == "it runs with effective uid 0"
    assert _environ.trusted_getenv("GPROCKET_HELPER") is None
    assert _environ.ignored() == (
        "GPROCKET_HELPER='/nowhere/helper' ignored because it runs with effective uid 0: "
        "pass helper= explicitly",)
