"""gprocket.admin.doctor.diagnose: the pure prediction, over hand-made facts.

The privileged counterpart (tests/privileged/test_doctor_predict.py) checks
the same predictions against what gprocket.open really does.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from gprocket.admin.doctor import KINDS, Facts, HelperFacts, SudoFacts, diagnose, notes
from gprocket.admin.policy import DEFAULT_RULES, parse_policy

ALL_CAPS = (1 << 41) - 1
NET_BIND, NET_ADMIN, NET_RAW, SYS_ADMIN = 1 << 10, 1 << 12, 1 << 13, 1 << 21
HELPER_CAPS = (1 << 1) | (1 << 6) | NET_BIND | NET_ADMIN | NET_RAW | SYS_ADMIN
HELPER = "/usr/local/libexec/gprocket/gprocket-helper"
POLICY = "/usr/local/libexec/gprocket/policy"


def facts(**changes: Any) -> Facts:
    """An unprivileged user with nothing set up, changed by ``changes``."""
    base = Facts(
        uid=1000,
        user="alice",
        gids=frozenset({1000}),
        effective=0,
        permitted=0,
        ambient=0,
        bounding=ALL_CAPS,
        no_new_privs=False,
        port_start=1024,
        ping_range=(1, 0),
        prctl=True,
        strategies=("inherited", "plain", "capabilities", "broker", "sudo"),
        helper=None,
        helper_searched=("no helper installed (looked at /usr/local/libexec/...)",),
        sudo=SudoFacts(True, HELPER, False, "sudo: a password is required"),
        tun_device=True,
        tun_name="gp0",
        netns="lab",
        netns_exists=True,
    )
    return replace(base, **changes)


def helper(**changes: Any) -> HelperFacts:
    """An installed caps-mode helper this user may run, default policy."""
    base = HelperFacts(
        path=HELPER,
        exists=True,
        executable=True,
        uid=0,
        gid=995,
        group="gprocket",
        mode=0o750,
        file_caps=HELPER_CAPS,
        policy_path=POLICY,
        policy_rules=DEFAULT_RULES,
    )
    return replace(base, **changes)


def served(f: Facts) -> dict[str, str | None]:
    return {d.kind: d.serves for d in diagnose(f)}


def by_kind(f: Facts, kind: str) -> Any:
    return next(d for d in diagnose(f) if d.kind == kind)


def test_nothing_set_up_serves_nothing_and_says_install() -> None:
    report = diagnose(facts())
    assert {d.serves for d in report} == {None}
    assert by_kind(facts(), "udp-low").fix == "sudo capsetup install"
    ping_fix = 'sudo sysctl -w net.ipv4.ping_group_range="1000 1000"'
    assert by_kind(facts(), "icmp-ping").fix == ping_fix
    plain = next(v for v in by_kind(facts(), "tcp-low").verdicts if v.rung == "plain")
    assert "below net.ipv4.ip_unprivileged_port_start (1024)" in plain.reason
    assert plain.fix is not None and "ip_unprivileged_port_start=80" in plain.fix


def test_permitted_capability_serves_through_the_capabilities_rung() -> None:
    result = served(facts(permitted=NET_RAW))
    assert result["icmp-raw"] == result["icmp6-raw"] == result["packet"] == "capabilities"
    assert result["udp-low"] is None


def test_effective_capability_makes_plain_step_aside() -> None:
    f = facts(permitted=NET_BIND, effective=NET_BIND, ambient=NET_BIND)
    diagnosis = by_kind(f, "udp-low")
    assert diagnosis.serves == "capabilities"
    plain = next(v for v in diagnosis.verdicts if v.rung == "plain")
    assert not plain.serves and "capabilities rung serves this" in plain.reason


def test_root_is_served_by_plain() -> None:
    f = facts(uid=0, user="root", gids=frozenset({0}), effective=ALL_CAPS, permitted=ALL_CAPS)
    result = served(f)
    assert result["tcp-low"] == result["icmp6-raw"] == result["tun"] == "plain"
    assert result["netns"] == "plain"
    assert result["icmp-ping"] is None  # root too needs ping_group_range


def test_lowered_sysctls_serve_low_ports_and_ping_plainly() -> None:
    f = facts(port_start=0, ping_range=(0, 2147483647))
    result = served(f)
    assert result["tcp-low"] == result["udp-low"] == result["icmp-ping"] == "plain"
    assert result["icmp-raw"] is None


def test_port_start_between_ports() -> None:
    result = served(facts(port_start=60))
    assert (result["tcp-low"], result["udp-low"]) == ("plain", None)


def test_missing_prctl_blocks_the_capabilities_rung() -> None:
    result = served(facts(permitted=NET_RAW, prctl=False))
    assert result["icmp-raw"] is None
    verdict = next(v for v in by_kind(facts(prctl=False), "icmp-raw").verdicts
                   if v.rung == "capabilities")  # fmt: skip
    assert verdict.fix == "pip install python-prctl"


def test_helper_with_caps_serves_what_the_default_policy_grants() -> None:
    result = served(facts(helper=helper()))
    assert result["tcp-low"] == result["udp-low"] == "broker"
    # The defaults grant no raw socket (issue 12, finding 2): ICMP echo is a ping socket.
    assert result["icmp-raw"] is None and result["icmp6-raw"] is None
    assert result["packet"] is None and result["tun"] is None and result["netns"] is None
    packet_fix = by_kind(facts(helper=helper()), "packet").fix
    assert packet_fix == f"add 'allow user:alice packet' to {POLICY}"
    assert by_kind(facts(helper=helper()), "icmp-raw").fix == (
        f"add 'allow user:alice raw icmp' to {POLICY}")
    assert served(facts(helper=helper(), ping_range=(1000, 1000)))["icmp-ping"] == "plain"


def test_helper_in_a_directory_others_can_write_serves_nothing() -> None:
    # Issue 12, finding 8: what the helper answers, not "ok broker".
    why = "a directory above it is not root-only: /tmp is writable by others (mode 1777)"
    f = facts(helper=helper(policy_rules=(), policy_refused=why))
    assert all(serves is None for kind, serves in served(f).items() if kind != "icmp-ping")
    broker = next(v for v in by_kind(f, "udp-low").verdicts if v.rung == "broker")
    assert broker.reason == f"the helper denies everything: {why}"
    assert broker.fix is not None and "capsetup install" in broker.fix


def test_notes_show_ping_group_strong_rules_and_ignored_variables() -> None:
    rules = parse_policy("allow * bind any 1-1023\nallow group:1000 raw icmp\n"
                         "allow group:7 packet\n")  # fmt: skip
    f = facts(helper=helper(policy_rules=rules), ping_range=(995, 995),
              ignored_env=("GPROCKET_HELPER='/x' ignored because it runs with effective uid 0: "
                           "pass helper= explicitly",))  # fmt: skip
    said = notes(f)
    assert said[0].startswith("GPROCKET_HELPER='/x' ignored because")
    assert "net.ipv4.ping_group_range is 995 995: covers none of your groups" in said
    assert "the helper's group gprocket (gid 995) is in ping_group_range" in said
    assert (f"policy {POLICY} line 2: allow group:1000 raw icmp: may send any IP packet with "
            "any source address") in said  # fmt: skip
    assert not any("allow group:7 packet" in line for line in said)  # group 7 is not alice's
    closed = notes(facts(helper=helper()))
    assert "net.ipv4.ping_group_range is 1 0: ICMP echo sockets are closed to every group" in closed
    assert any("gid 995) is NOT in ping_group_range" in line for line in closed)


def test_notes_carry_the_helpers_sandbox_report_and_warn_where_a_part_is_off() -> None:
    confined = ("seccomp: on kill-process syscalls=19",
                "landlock: on abi=7 fs=/dev/net/tun:rw scope=abstract-unix-socket,signal")
    said = notes(facts(helper=helper(sandbox=confined)))
    assert "helper sandbox seccomp: on kill-process syscalls=19" in said
    assert not any(line.startswith("warning: the helper runs without") for line in said)
    bare = ("seccomp: on kill-process syscalls=19", "landlock: off (the kernel has no Landlock)")
    said = notes(facts(helper=helper(sandbox=bare)))
    assert "helper sandbox landlock: off (the kernel has no Landlock)" in said
    assert any(line.startswith("warning: the helper runs without landlock: its file access "
                               "is not fenced") for line in said)
    assert not any("without seccomp" in line for line in said)


def test_setuid_helper_is_limited_by_the_bounding_set() -> None:
    f = facts(helper=helper(file_caps=None, mode=0o4750), bounding=ALL_CAPS & ~NET_RAW)
    result = served(f)
    assert result["udp-low"] == "broker"
    assert result["icmp-raw"] is None
    verdict = next(v for v in by_kind(f, "icmp-raw").verdicts if v.rung == "broker")
    assert verdict.reason == "the helper (setuid root) does not get CAP_NET_RAW"


def test_helper_without_privilege_cannot_help() -> None:
    f = facts(helper=helper(file_caps=None))
    verdict = next(v for v in by_kind(f, "udp-low").verdicts if v.rung == "broker")
    assert "neither setuid root nor carries file capabilities" in verdict.reason


def test_outside_the_group_says_join_it() -> None:
    f = facts(helper=helper(executable=False))
    assert by_kind(f, "udp-low").fix == "sudo usermod -aG gprocket alice  (then log in again)"
    g = facts(helper=helper(executable=False, listed_in_group=True))
    assert by_kind(g, "udp-low").fix is not None
    assert by_kind(g, "udp-low").fix.startswith("log out and in again")


def test_no_new_privs_blocks_helper_and_sudo() -> None:
    f = facts(helper=helper(), no_new_privs=True,
              sudo=SudoFacts(True, HELPER, True, "", DEFAULT_RULES))  # fmt: skip
    diagnosis = by_kind(f, "udp-low")
    assert diagnosis.serves is None
    reasons = {v.rung: v.reason for v in diagnosis.verdicts}
    assert "no_new_privs" in reasons["broker"] and "no_new_privs" in reasons["sudo"]


def test_nosuid_mount_makes_the_helper_powerless() -> None:
    f = facts(helper=helper(nosuid=True))
    assert served(f)["udp-low"] is None


def test_refused_policy_denies_everything() -> None:
    f = facts(helper=helper(policy_rules=(), policy_refused="policy line 3: bad subject"))
    diagnosis = by_kind(f, "udp-low")
    assert diagnosis.serves is None
    broker = next(v for v in diagnosis.verdicts if v.rung == "broker")
    assert broker.reason == "the policy denies everything: policy line 3: bad subject"


def test_tun_and_netns_follow_their_policy_lines() -> None:
    rules = parse_policy("allow user:1000 tun gp*\nallow group:1000 netns lab\n")
    f = facts(helper=helper(policy_rules=rules))
    result = served(f)
    assert result["tun"] == result["netns"] == "broker"
    assert served(replace(f, tun_name="vpn0"))["tun"] is None
    missing = replace(f, netns_exists=False)
    assert served(missing)["netns"] is None
    assert by_kind(missing, "netns").fix == "sudo ip netns add lab"
    assert served(replace(f, tun_device=False))["tun"] == "broker"  # the helper opens it
    assert served(replace(f, tun_device=False, tun_exists=False))["tun"] is None


def test_sudo_rule_serves_when_the_helper_is_out_of_reach() -> None:
    sudo = SudoFacts(True, HELPER, True, "", DEFAULT_RULES)
    f = facts(helper=helper(executable=False), sudo=sudo)
    assert served(f)["udp-low"] == "sudo"
    assert served(f)["packet"] is None  # the same policy applies under sudo


def test_strategy_order_decides_between_working_rungs() -> None:
    sudo = SudoFacts(True, HELPER, True, "", DEFAULT_RULES)
    f = facts(helper=helper(), sudo=sudo, strategies=("sudo", "broker"))
    assert served(f)["udp-low"] == "sudo"
    assert served(replace(f, strategies=("plain", "helper")))["udp-low"] == "helper"


def test_every_kind_is_reported_and_json_ready() -> None:
    report = diagnose(facts(helper=helper()))
    assert [d.kind for d in report] == [k.key for k in KINDS]
    text = json.dumps([d.to_dict() for d in report])
    assert json.loads(text)[0]["rungs"][0]["rung"] == "inherited"
