"""The README's main job, as an unprivileged user against an installed helper."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from support import privileged as priv

DEMO_POLICY = """\
allow * bind any 1-1023
allow * raw icmp,icmpv6
allow group:gprocket packet
"""


def test_demo_serves_everything_through_the_helper(
    unpriv_user: priv.User, netns: priv.Netns, installed_helper: Callable[..., Path],
) -> None:
    helper = installed_helper("caps", policy=DEMO_POLICY)
    proc = priv.run_argv(unpriv_user, [priv.VENV_PYTHON, "-m", "gprocket.cli", "demo"],
                         netns=netns, env={"GPROCKET_HELPER": str(helper)})
    out = proc.stdout
    assert proc.returncode == 0, f"{out}\n{proc.stderr}"
    assert f"as {unpriv_user.name} (uid {unpriv_user.uid}), effective capabilities none" in out
    assert "packet socket on lo        served by rung 'broker'" in out
    assert "UDP port 53 on 127.0.0.1  served by rung 'broker'" in out
    assert "datagram answered: 'echo: hello from an unprivileged user'" in out
    assert "ping 127.0.0.1  3/3 replies" in out
    assert "ping ::1        3/3 replies" in out
    # Each echo request and reply crosses lo: seen leaving and arriving.
    assert "captured 12 frames on lo:" in out
    assert "out IPv4 127.0.0.1 > 127.0.0.1 UDP" in out
    assert "in  IPv4 127.0.0.1 > 127.0.0.1 UDP" in out
    assert "the hub never blocked" in out


def test_demo_without_packet_rule_explains_the_refusal(
    unpriv_user: priv.User, netns: priv.Netns, installed_helper: Callable[..., Path],
) -> None:
    helper = installed_helper("caps")
    proc = priv.run_argv(unpriv_user, [priv.VENV_PYTHON, "-m", "gprocket.cli", "demo"],
                         netns=netns, env={"GPROCKET_HELPER": str(helper)})
    assert proc.returncode == 1
    assert proc.stderr.startswith("gprocket demo: ")
    assert "Traceback" not in proc.stderr
    assert "packet" in proc.stderr
