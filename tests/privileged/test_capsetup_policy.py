"""The Python policy reader agrees with the installed helper's own --check-policy.

doctor predicts from the Python reader and capsetup validates with it, so a
file the helper refuses must be refused here too, and the other way round.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import privileged as priv

from gprocket.admin.policy import load_policy

pytestmark = pytest.mark.privileged

TEXTS = [
    "",
    "# only a comment\n\n",
    "allow * bind any 1-1023\nallow * raw icmp,icmpv6\n",
    "allow group:gprocket packet\nallow group:gprocket tun gp* persist\n",
    "allow group:gprocket tun gp* net 10.9.0.0/24,fd00:9::/64 mtu 1280-9000\n",
    "allow * tun gp* mtu 1500 net 10.0.0.0/8\nallow * bind udp 53 127.0.0.1 reuse\n",
    "allow * tun gp* net 10.9.0.1/24\n",
    "allow * tun gp* net 10.9.0.0\n",
    "allow * tun gp* mtu 67-1500\n",
    "allow * tun gp* net 10.0.0.0/8 net 11.0.0.0/8\n",
    "allow * bind udp 53 reuse 127.0.0.1\n",
    "allow user:0 bind udp,tcp 53 192.0.2.10\nallow user:root netns lab\n",
    "allow * bind tcp, 80\n",
    "allow *\tbind\ttcp\t80-90\t::/0\n",
    "allow * tun *\nallow * device net/tun\nallow * raw any\n",
    "allow * bind tcp 0\n",
    "allow * bind tcp 90-80\n",
    "allow * bind icmp 80\n",
    "allow * bind tcp 80 ::1/129\n",
    "allow * raw 256\n",
    "allow * packet eth0\n",
    "allow * tun ../x\n",
    "allow * tun .hidden\n",
    "allow * device mem\n",
    "allow * netns " + "n" * 32 + "\n",
    "allow user:no-such-user-xyz packet\n",
    "allow group:no-such-group-xyz packet\n",
    "deny * packet\n",
    "allow * frobnicate\n",
    "allow * raw icmp extra\n",
    "allow * bind tcp 80 " + "x" * 250 + "\n",
]


capsetup = priv.run_capsetup


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """One capsetup install shared by the module (the policy is rewritten per case)."""
    priv.ensure_group(priv.TEST_GROUP)
    priv.install_root()
    prefix = priv.INSTALL_ROOT / f"cs-pol-{secrets.token_hex(4)}"
    done = capsetup("install", "--prefix", str(prefix))
    assert done.returncode == 0, done.stderr
    try:
        yield prefix / "libexec" / "gprocket" / "gprocket-helper"
    finally:
        capsetup("remove", "--purge", "--prefix", str(prefix))
        shutil.rmtree(prefix, ignore_errors=True)


@pytest.mark.parametrize("text", TEXTS)
def test_python_reader_agrees_with_the_helper(installed: Path, text: str) -> None:
    policy = installed.parent / "policy"
    policy.write_text(text)
    helper = subprocess.run([str(installed), "--check-policy"], capture_output=True, text=True,
                            check=False)  # fmt: skip
    ours = load_policy(policy)
    said = (helper.stdout + helper.stderr).strip()
    assert (helper.returncode == 0) == (ours.refused is None), f"helper: {said}\nours: {ours}"
    if ours.refused is None:
        # Same number of rules: the helper prints one line per rule after its header.
        rule_lines = [line for line in said.splitlines() if line.startswith("allow")]
        assert len(rule_lines) == len(ours.rules), said


def test_an_unsafe_policy_file_is_refused_by_both(installed: Path) -> None:
    policy = installed.parent / "policy"
    policy.write_text("allow * packet\n")
    os.chmod(policy, 0o664)  # group-writable: the unsafe state under test
    try:
        helper = subprocess.run([str(installed), "--check-policy"], capture_output=True,
                                text=True, check=False)  # fmt: skip
        ours = load_policy(policy)
        assert helper.returncode != 0
        assert ours.refused is not None and "group-writable" in ours.refused
        status = capsetup("status", "--prefix", str(installed.parent.parent.parent))
        assert status.returncode == 1 and "group-writable" in status.stdout
    finally:
        os.chmod(policy, 0o644)
