"""capsetup's pure parts: capability text and xattr, mountinfo, policy, units, CLI usage."""

from __future__ import annotations

import ipaddress
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import privileged as priv

from capsetup import SetupError
from capsetup.__main__ import main
from capsetup._layout import Layout, Manifest
from capsetup.pinggroup import conf_file, merged_range, render_conf
from capsetup.sudoers import render_sudoers
from capsetup.systemd import parse_listen, render_units
from gprocket.admin.filecaps import (
    FileCaps,
    cap_mask,
    decode_xattr,
    encode_xattr,
    packaged_file_caps,
    parse_caps,
)
from gprocket.admin.locations import mount_of, parse_mountinfo, path_problems
from gprocket.admin.policy import (
    DEFAULT_POLICY,
    Caller,
    PolicyError,
    grants,
    parse_policy,
    rule_warning,
)

# ---- capabilities -------------------------------------------------------------


def test_parse_caps_and_getcap_text() -> None:
    caps = parse_caps("cap_net_bind_service,cap_net_raw+p")
    assert caps == FileCaps(permitted=(1 << 10) | (1 << 13))
    assert caps.text == "cap_net_bind_service,cap_net_raw=p"
    assert parse_caps("cap_net_raw=ep").text == "cap_net_raw=ep"
    assert parse_caps("cap_net_raw=eip").text == "cap_net_raw=eip"


@pytest.mark.parametrize(
    "text", ["", "cap_bogus+p", "cap_net_raw", "cap_net_raw+x", "cap_net_raw+p cap_chown+e"]
)
def test_parse_caps_refuses_what_it_cannot_store(text: str) -> None:
    with pytest.raises(ValueError):
        parse_caps(text)


def test_packaged_file_caps_come_from_the_makefile() -> None:
    helper = priv.packaged_helper()
    assert packaged_file_caps(helper) == parse_caps(priv.file_caps())


@given(st.integers(0, (1 << 41) - 1), st.integers(0, (1 << 41) - 1), st.booleans())
def test_xattr_round_trip(permitted: int, inheritable: int, effective: bool) -> None:
    caps = FileCaps(permitted, inheritable, effective)
    data = encode_xattr(caps)
    assert len(data) == 20
    assert decode_xattr(data) == caps


def test_decode_revision_3_keeps_rootid() -> None:
    data = struct.pack("<IIIIII", 0x03000000, 1 << 13, 0, 0, 0, 100000)
    assert decode_xattr(data) == FileCaps(1 << 13, 0, False, 100000)
    with pytest.raises(ValueError):
        decode_xattr(data[:7])
    with pytest.raises(ValueError):
        decode_xattr(struct.pack("<IIIII", 0x07000000, 0, 0, 0, 0))




def test_cap_mask_accepts_short_names() -> None:
    assert cap_mask("net_raw, CAP_NET_ADMIN") == (1 << 13) | (1 << 12)


# ---- filesystem ------------------------------------------------------------------

MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
42 27 0:50 / /opt/with\\040space rw,nosuid,nodev - tmpfs tmpfs rw,mode=755
43 27 0:51 / /opt rw,relatime shared:1 - ext4 /dev/vdb rw
44 43 0:52 / /opt/ro ro,relatime - ext4 /dev/vdc ro
"""


def test_parse_mountinfo_unescapes_and_reads_options() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts] == ["/", "/opt/with space", "/opt", "/opt/ro"]
    assert mounts[1].nosuid and not mounts[2].nosuid
    assert mounts[3].read_only
    assert mounts[2].source == "/dev/vdb"


def test_mount_of_picks_the_longest_mount_point() -> None:
    # Paths are resolved on this machine (the nearest existing ancestor counts).
    info = "1 0 8:1 / / rw - ext4 a rw\n2 1 8:2 / /usr rw - ext4 b rw\n" \
           "3 2 8:3 / /usr/share rw,nosuid - ext4 c rw\n"  # fmt: skip
    assert mount_of(Path("/usr/share/not-there/x"), info).mount_point == "/usr/share"
    assert mount_of(Path("/usr/share/not-there/x"), info).nosuid
    assert mount_of(Path("/usr/sharex-not-there"), info).mount_point == "/usr"
    assert mount_of(Path("/etc"), info).mount_point == "/"


def test_path_problems_flag_tmp() -> None:
    problems = path_problems(Path("/tmp"))
    assert "/tmp is writable by others (mode 1777)" in problems
    assert "/tmp has the sticky bit (a shared directory like /tmp)" in problems
    assert path_problems(Path("/usr")) == []


# ---- policy ----------------------------------------------------------------------


def test_default_policy_parses_to_the_documented_defaults() -> None:
    # No raw socket by default: its holder could send any packet from any source.
    rules = parse_policy(DEFAULT_POLICY)
    assert [(r.subject, r.verb) for r in rules] == [("*", "bind")]
    assert rules[0].ports == (1, 1023) and rules[0].protos == frozenset({"any"})


def test_the_helper_and_the_library_share_the_defaults() -> None:
    source = (priv.REPO / "helper" / "gp.c").read_text()
    assert 'const char gp_default_policy[] = "allow * bind any 1-1023\\n";' in source


def test_strong_rules_say_what_their_holder_can_do() -> None:
    raw, packet, bind = parse_policy("allow * raw icmp\nallow group:0 packet\n"
                                     "allow * bind tcp 80\n")  # fmt: skip
    assert rule_warning(raw) == (
        "line 1: allow * raw icmp: may send any IP packet with any source address")
    assert rule_warning(packet) is not None and "any frame" in rule_warning(packet)
    assert rule_warning(bind) is None


# ---- ping group --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "gid", "wanted"),
    [
        ((1, 0), 990, (990, 990)),  # closed: just the group
        ((100, 200), 150, None),  # already covered: nothing to do
        ((100, 200), 990, (100, 990)),  # never narrowed: the smallest cover of both
        ((1000, 2000), 990, (990, 2000)),
        ((0, 2147483647), 990, None),
    ],
)
def test_ping_range_is_widened_never_narrowed(
    current: tuple[int, int], gid: int, wanted: tuple[int, int] | None
) -> None:
    assert merged_range(current, gid) == wanted


def test_ping_conf_names_and_text() -> None:
    assert conf_file(Layout.of("/usr/local"), Path("/etc/sysctl.d")) == Path(
        "/etc/sysctl.d/60-gprocket-ping.conf")
    other = conf_file(Layout.of("/opt/x"), Path("/etc/sysctl.d"))
    assert other.name.startswith("60-gprocket-ping-") and other.suffix == ".conf"
    text = render_conf((990, 990), "gprocket", 990, (1, 0))
    assert text.splitlines()[-1] == "net.ipv4.ping_group_range = 990 990"
    assert "restores" in text and "1 0" in text


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("deny * packet\n", 1, "unknown keyword"),
        ("\n# c\nallow * bind tcp 0\n", 3, "outside 1..65535"),
        ("allow * bind tcp 100-50\n", 1, "outside 1..65535"),
        ("allow * bind icmp 80\n", 1, "bad bind protocols"),
        ("allow * bind tcp 80 10.0.0.300\n", 1, "bad address"),
        ("allow * raw 256\n", 1, "bad raw protocol"),
        ("allow * packet eth0\n", 1, "interface cannot be enforced"),
        ("allow * tun ../x\n", 1, "bad tun pattern"),
        ("allow * device mem\n", 1, "not in the helper's allowlist"),
        ("allow * netns a/b\n", 1, "want: allow SUBJECT netns"),
        ("allow user:no-such-user-xyz packet\n", 1, "unknown user"),
        ("allow * frobnicate\n", 1, "unknown verb"),
        ("allow * bind tcp 80 " + "x" * 250 + "\n", 1, "longer than 255"),
        ("allow * tun gp* persist\n", 1, "persist removed"),
        ("allow * tun gp* net 10.9.0.1/24\n", 1, "host bits zero"),
        ("allow * tun gp* net 10.9.0.0\n", 1, "want ADDR/LEN"),
        ("allow * tun gp* mtu 67-1500\n", 1, "mtu range '67-1500' outside 68..65535"),
        ("allow * tun gp* net 10.0.0.0/8 net 11.0.0.0/8\n", 1, "want: allow SUBJECT tun"),
        ("allow * bind udp 53 reuse 127.0.0.1\n", 1, "want: allow SUBJECT bind"),
    ],
)
def test_policy_errors_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(PolicyError, match=words) as info:
        parse_policy(text)
    assert info.value.line == line


def test_grants_follow_the_helper_rules() -> None:
    rules = parse_policy(
        "allow user:1000 bind udp 53 192.0.2.10\n"
        "allow group:50 bind tcp 80-90 ::/0\n"
        "allow * raw icmp\n"
        "allow group:50 tun gp*\n"
        "allow user:1000 netns lab\n"
    )
    alice = Caller(1000, frozenset({1000}))
    bob = Caller(2000, frozenset({2000, 50}))
    assert grants(rules, alice, "bind", proto="udp", port=53, address="192.0.2.10")
    assert not grants(rules, alice, "bind", proto="udp", port=53)  # wildcard needs /0
    assert not grants(rules, alice, "bind", proto="udp", port=53, address="192.0.2.11")
    assert grants(rules, bob, "bind", proto="tcp", port=85, family=6)
    assert not grants(rules, bob, "bind", proto="tcp", port=85, family=4)  # ::/0 is IPv6 only
    assert grants(rules, alice, "raw", proto=1) and not grants(rules, alice, "raw", proto=58)
    assert grants(rules, bob, "tun", name="gp7") and not grants(rules, alice, "tun", name="gp7")
    assert not grants(rules, bob, "tun", name="vpn0")
    assert grants(rules, alice, "netns", name="lab") and not grants(rules, bob, "netns", name="lab")
    assert rules[0].network == ipaddress.ip_network("192.0.2.10/32")


def test_tun_networks_mtu_and_bind_reuse_are_read() -> None:
    tun, bind = parse_policy("allow * tun gp* mtu 1500 net 10.9.0.0/24,fd00:9::/64\n"
                             "allow * bind udp 53 127.0.0.1 reuse\n")
    assert tun.nets == (ipaddress.ip_network("10.9.0.0/24"), ipaddress.ip_network("fd00:9::/64"))
    assert tun.mtu == (1500, 1500)
    assert (bind.reuse, bind.network) == (True, ipaddress.ip_network("127.0.0.1/32"))
    assert parse_policy("allow * tun gp*\n")[0].nets == ()


# ---- sudoers, systemd, layout --------------------------------------------------------


def test_sudoers_text_and_refusals() -> None:
    helper = Path("/opt/x/libexec/gprocket/gprocket-helper")
    text = render_sudoers(helper, user="alice")
    assert f'alice ALL=(root) NOPASSWD: {helper} "", {helper} --broker' in text
    with pytest.raises(SetupError, match="exactly one"):
        render_sudoers(helper, user="a", group="b")
    with pytest.raises(SetupError, match="misread"):
        render_sudoers(Path("/opt/my dir/gprocket-helper"), user="alice")


def test_sudoers_drop_in_names_are_ones_sudo_reads() -> None:
    assert Layout.of("/usr/local").sudoers_file() == Path("/etc/sudoers.d/gprocket")
    name = Layout.of("/opt/gprocket/t/abc").sudoers_file().name
    assert name.startswith("gprocket-") and "." not in name and not name.endswith("~")
    assert Layout.of("/opt/a/").sudoers_file() == Layout.of("/opt/a").sudoers_file()
    with pytest.raises(SetupError, match="absolute"):
        Layout.of("relative/dir")


def test_manifest_json_round_trip(tmp_path: Path) -> None:
    manifest = Manifest(mode="caps", group="gprocket", created_dirs=("/a", "/a/b"),
                        sudoers=("/etc/sudoers.d/gprocket",))  # fmt: skip
    assert Manifest(**{k: v for k, v in manifest.__dict__.items()}) == manifest
    assert manifest.to_json() == manifest.to_json()
    assert Manifest().empty and not manifest.empty


def test_systemd_units(tmp_path: Path) -> None:
    text = render_units("dns", user="dns", exec_start="/opt/venv/bin/python /srv/dns.py",
                        caps="cap_net_bind_service",
                        listen=(parse_listen("53/udp"), parse_listen("[::1]:53/tcp")))  # fmt: skip
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE\n" in text
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n" in text
    assert "NoNewPrivileges=yes\n" in text and "User=dns\n" in text
    assert "ListenDatagram=53\n" in text and "ListenStream=[::1]:53\n" in text
    service, socket_unit = text.split("# /etc/systemd/system/dns.socket\n")
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    (tmp_path / "dns.service").write_text(service)
    (tmp_path / "dns.socket").write_text(socket_unit)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "dns.service"), str(tmp_path / "dns.socket")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "Unknown" not in done.stderr and "Failed" not in done.stderr, done.stderr


@pytest.mark.parametrize("bad", ["53", "53/icmp", "x/udp", "70000/tcp", "host:53/udp"])
def test_listen_specs_are_checked(bad: str) -> None:
    with pytest.raises(SetupError):
        parse_listen(bad)


def test_systemd_refuses_root_and_bad_caps() -> None:
    with pytest.raises(SetupError, match="unprivileged"):
        render_units("x", user="root", exec_start="/bin/true")
    with pytest.raises(SetupError, match="unknown capability"):
        render_units("x", user="svc", exec_start="/bin/true", caps="cap_fly")


def test_cli_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["install", "--mode", "magic"]) == 2
    assert main(["systemd", "--user", "svc", "--exec", "/bin/true", "--listen", "80/tcp"]) == 0
    assert "ListenStream=80" in capsys.readouterr().out
    assert main(["systemd", "--user", "root", "--exec", "/bin/true"]) == 1
    assert "unprivileged account" in capsys.readouterr().err
