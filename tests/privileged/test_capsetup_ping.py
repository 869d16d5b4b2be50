"""capsetup install opens ICMP echo sockets to the helper's group; remove undoes it.

Issue 12, finding 2. net.ipv4.ping_group_range is per network namespace, so
capsetup runs inside a namespace each test makes, and writes its sysctl.d
file into the test's temporary directory: the host's range and /etc/sysctl.d
are never touched.
"""

from __future__ import annotations

import grp
import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

capsetup = priv.run_capsetup
CONF = "60-gprocket-ping"


@pytest.fixture
def prefix(unpriv_user: priv.User) -> Iterator[Path]:
    path = priv.install_root() / f"cs-ping-{secrets.token_hex(5)}"
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def ping_range(netns: priv.Netns) -> str:
    return " ".join(netns.exec(["cat", "/proc/sys/net/ipv4/ping_group_range"]).stdout.split())


def install(prefix: Path, netns: priv.Netns, sysctl_dir: Path, *extra: str) -> str:
    done = capsetup("install", "--prefix", str(prefix), "--sysctl-dir", str(sysctl_dir),
                    *extra, netns=netns)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_install_opens_the_range_to_the_group_and_remove_restores_it(
    prefix: Path, netns: priv.Netns, tmp_path: Path
) -> None:
    gid = grp.getgrnam(priv.TEST_GROUP).gr_gid
    assert ping_range(netns) == "1 0"
    out = install(prefix, netns, tmp_path)
    assert f"set net.ipv4.ping_group_range from 1 0 to {gid} {gid}" in out
    assert ping_range(netns) == f"{gid} {gid}"
    [conf] = tmp_path.iterdir()
    assert conf.name.startswith(CONF) and conf.suffix == ".conf"
    assert conf.read_text().splitlines()[-1] == f"net.ipv4.ping_group_range = {gid} {gid}"
    assert (conf.stat().st_uid, conf.stat().st_mode & 0o777) == (0, 0o644)
    manifest = json.loads((prefix / "libexec" / "gprocket" / "capsetup.json").read_text())
    assert (manifest["ping_previous"], manifest["ping_applied"]) == ([1, 0], [gid, gid])
    status = capsetup("status", "--prefix", str(prefix), netns=netns)
    assert (f"ping:     net.ipv4.ping_group_range {gid} {gid}: group {priv.TEST_GROUP} "
            f"(gid {gid}) may use ICMP echo sockets") in status.stdout  # fmt: skip
    assert f"set by capsetup in {conf} (remove restores 1 0)" in status.stdout
    # Idempotent.
    assert install(prefix, netns, tmp_path) == "nothing to change\n"
    removed = capsetup("remove", "--prefix", str(prefix), netns=netns)
    assert f"removed {conf}" in removed.stdout
    assert "restored net.ipv4.ping_group_range to 1 0" in removed.stdout
    assert ping_range(netns) == "1 0"
    assert list(tmp_path.iterdir()) == []


def test_a_wider_range_is_never_narrowed(prefix: Path, netns: priv.Netns, tmp_path: Path) -> None:
    gid = grp.getgrnam(priv.TEST_GROUP).gr_gid
    netns.sysctl("net.ipv4.ping_group_range", "0 2147483647")
    assert "ping_group_range" not in install(prefix, netns, tmp_path)
    assert ping_range(netns) == "0 2147483647"
    assert list(tmp_path.iterdir()) == []
    capsetup("remove", "--purge", "--prefix", str(prefix), netns=netns)
    assert ping_range(netns) == "0 2147483647"
    # A range beside the gid is merged into the smallest range covering both.
    netns.sysctl("net.ipv4.ping_group_range", f"{gid + 5} {gid + 10}")
    out = install(prefix, netns, tmp_path)
    assert f"to {gid} {gid + 10}" in out
    assert ping_range(netns) == f"{gid} {gid + 10}"
    removed = capsetup("remove", "--purge", "--prefix", str(prefix), netns=netns)
    assert f"restored net.ipv4.ping_group_range to {gid + 5} {gid + 10}" in removed.stdout
    assert ping_range(netns) == f"{gid + 5} {gid + 10}"


@pytest.fixture
def second_prefix() -> Iterator[Path]:
    path = priv.install_root() / f"cs-ping2-{secrets.token_hex(5)}"
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def values(sysctl_dir: Path) -> list[str]:
    """Each install's persisted value, in the order sysctl applies them at boot."""
    return [conf.read_text().splitlines()[-1] for conf in sorted(sysctl_dir.iterdir())]


@pytest.mark.parametrize("second_group", ["same", "other"])
def test_two_installs_share_the_range_and_each_remove_keeps_what_the_other_needs(
    second_group: str, prefix: Path, second_prefix: Path, netns: priv.Netns, tmp_path: Path
) -> None:
    """The range is one setting for the host and two prefixes may rely on it:
    removing either install keeps the other's gid in the range (in the kernel
    and in the files sysctl applies at boot, which all hold the same value),
    and removing the last restores the range found before the first."""
    gid = grp.getgrnam(priv.TEST_GROUP).gr_gid
    group = priv.TEST_GROUP if second_group == "same" else "daemon"
    other = grp.getgrnam(group).gr_gid
    assert ping_range(netns) == "1 0"
    install(prefix, netns, tmp_path)
    out = install(second_prefix, netns, tmp_path, "--group", group)
    both = (min(gid, other), max(gid, other))
    assert ping_range(netns) == f"{both[0]} {both[1]}", out
    assert len(list(tmp_path.iterdir())) == 2
    assert values(tmp_path) == [f"net.ipv4.ping_group_range = {both[0]} {both[1]}"] * 2
    # The first install goes: the second's gid stays.
    removed = capsetup("remove", "--purge", "--prefix", str(prefix), netns=netns)
    assert removed.returncode == 0, removed.stderr
    assert ping_range(netns) == f"{other} {other}", removed.stdout
    assert values(tmp_path) == [f"net.ipv4.ping_group_range = {other} {other}"]
    # The last one goes: the range found before the first install comes back.
    removed = capsetup("remove", "--purge", "--prefix", str(second_prefix), netns=netns)
    assert removed.returncode == 0, removed.stderr
    assert "restored net.ipv4.ping_group_range to 1 0" in removed.stdout
    assert ping_range(netns) == "1 0"
    assert list(tmp_path.iterdir()) == []


def test_no_ping_group_leaves_the_range_alone(
    prefix: Path, netns: priv.Netns, tmp_path: Path
) -> None:
    out = install(prefix, netns, tmp_path, "--no-ping-group")
    assert "ping_group_range" not in out
    assert ping_range(netns) == "1 0"
    assert list(tmp_path.iterdir()) == []
    status = capsetup("status", "--prefix", str(prefix), netns=netns)
    assert "ping:     net.ipv4.ping_group_range 1 0: group gprocket" in status.stdout
    assert "may NOT use ICMP echo sockets" in status.stdout
    capsetup("remove", "--purge", "--prefix", str(prefix), netns=netns)


PING_CODE = """
import json, gprocket.icmp as icmp
host = icmp.ping("127.0.0.1", count=2, interval=0.05, timeout=2)
print(json.dumps([host.received, host.is_alive]))
"""


def test_icmp_ping_and_doctor_work_for_a_member_of_a_default_install(
    prefix: Path, unpriv_user: priv.User, other_user: priv.User, netns: priv.Netns,
    tmp_path: Path,
) -> None:
    install(prefix, netns, tmp_path)
    helper = prefix / "libexec" / "gprocket" / "gprocket-helper"
    env = {"GPROCKET_HELPER": str(helper)}
    assert priv.run_json(unpriv_user, PING_CODE, netns=netns, env=env) == [2, True]
    cli = priv.run_argv(unpriv_user, [priv.VENV_PYTHON, "-m", "gprocket.cli", "ping", "-c", "2",
                                      "-i", "0.05", "127.0.0.1"], netns=netns, env=env)  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "2 packets transmitted, 2 received" in cli.stdout
    # Outside the group: no ping socket, and the default policy has no raw rule.
    outsider = priv.run_argv(other_user, [priv.VENV_PYTHON, "-m", "gprocket.cli", "ping", "-c",
                                          "1", "127.0.0.1"], netns=netns, env=env)  # fmt: skip
    assert outsider.returncode != 0
    doctor = priv.run_argv(unpriv_user, [priv.VENV_PYTHON, "-m", "gprocket.cli", "doctor",
                                         "--no-sudo", "--helper", str(helper)],
                           netns=netns)  # fmt: skip
    gid = grp.getgrnam(priv.TEST_GROUP).gr_gid
    assert f"note: net.ipv4.ping_group_range is {gid} {gid}: covers a group of yours" in (
        doctor.stdout)
    assert f"the helper's group gprocket (gid {gid}) is in ping_group_range" in doctor.stdout
    assert "ICMP echo (ping) datagram socket [icmp-ping]: plain" in doctor.stdout
    assert "raw ICMP socket [icmp-raw]: NOTHING" in doctor.stdout
    capsetup("remove", "--purge", "--prefix", str(prefix), netns=netns)


def test_status_and_doctor_say_what_a_raw_or_packet_rule_gives(
    prefix: Path, unpriv_user: priv.User, netns: priv.Netns, tmp_path: Path
) -> None:
    install(prefix, netns, tmp_path, "--no-ping-group")
    policy = prefix / "libexec" / "gprocket" / "policy"
    policy.write_text("allow * bind any 1-1023\nallow * raw icmp,icmpv6\n"
                      "allow group:gprocket packet\n")  # fmt: skip
    status = capsetup("status", "--prefix", str(prefix), netns=netns)
    assert ("warning:  line 2: allow * raw icmp,icmpv6: may send any IP packet with any "
            "source address") in status.stdout  # fmt: skip
    assert "warning:  line 3: allow group:gprocket packet: may send any frame" in status.stdout
    helper = prefix / "libexec" / "gprocket" / "gprocket-helper"
    doctor = priv.run_argv(unpriv_user, [priv.VENV_PYTHON, "-m", "gprocket.cli", "doctor",
                                         "--no-sudo", "--helper", str(helper)],
                           netns=netns)  # fmt: skip
    assert (f"note: policy {policy} line 2: allow * raw icmp,icmpv6: may send any IP packet "
            "with any source address") in doctor.stdout  # fmt: skip
    capsetup("remove", "--purge", "--prefix", str(prefix), netns=netns)
