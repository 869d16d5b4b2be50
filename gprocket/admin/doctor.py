"""Predict which rung of the ladder would serve each kind of request, and why not the others.

``gather()`` reads the facts (capability sets, sysctls, the helper and its
policy, sudo's answer); ``diagnose(facts)`` is pure: it walks the rungs in
the order the ladder would and says, for each kind of request, which one
serves and, for every other, the reason and the command that would fix it.
The rules mirror ``_ladder``, ``_ladder.plain.needed_caps``, ``_channel.helper`` and the
helper's own authorization (helper/gp.c), so the prediction can be checked
against what ``gprocket.open`` then really does.
"""

from __future__ import annotations

import grp
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._channel.helper import PACKAGED, locate
from .._environ import ignored as ignored_environment
from .._environ import trusted_getenv
from .._errors import RungUnavailable
from .._ladder import DEFAULT_ORDER
from .._ladder.caps import CAP_NET_ADMIN, CAP_NET_BIND_SERVICE, CAP_NET_RAW, CAP_SYS_ADMIN, cap_name
from .filecaps import read_file_caps
from .locations import DIRECTORY_REFUSAL, mount_of
from .policy import Caller, Rule, grants, load_helper_policy, rule_warning, subject_matches

__all__ = [
    "KINDS",
    "Diagnosis",
    "Facts",
    "HelperFacts",
    "Kind",
    "SudoFacts",
    "Verdict",
    "diagnose",
    "gather",
    "notes",
]

_SUDO_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Kind:
    """One kind of request doctor reports on.

    ``cap`` is the capability the kernel checks in-process (None: none
    helps); ``verb`` and the fields after it are what the helper's policy
    must grant.
    """

    key: str
    title: str
    cap: int | None
    verb: str
    proto: str | int | None = None
    port: int = 0
    family: int = 4


KINDS: tuple[Kind, ...] = (
    Kind("tcp-low", "TCP listener on port 80", CAP_NET_BIND_SERVICE, "bind", "tcp", 80),
    Kind("udp-low", "UDP socket on port 53", CAP_NET_BIND_SERVICE, "bind", "udp", 53),
    Kind("icmp-raw", "raw ICMP socket", CAP_NET_RAW, "raw", 1),
    Kind("icmp6-raw", "raw ICMPv6 socket", CAP_NET_RAW, "raw", 58, family=6),
    Kind("icmp-ping", "ICMP echo (ping) datagram socket", None, "ping"),
    Kind("packet", "packet socket (AF_PACKET)", CAP_NET_RAW, "packet"),
    Kind("tun", "TUN/TAP device", CAP_NET_ADMIN, "tun"),
    Kind("netns", "socket in a named network namespace", CAP_SYS_ADMIN, "netns"),
)


@dataclass(frozen=True)
class HelperFacts:
    """An installed helper as this user sees it."""

    path: str
    exists: bool
    executable: bool = False
    uid: int = 0
    gid: int = 0
    group: str = ""
    mode: int = 0
    file_caps: int | None = None  # permitted mask of its file capabilities
    nosuid: bool = False
    policy_path: str = ""
    policy_rules: tuple[Rule, ...] = ()
    policy_refused: str | None = None
    listed_in_group: bool = False  # /etc/group names the user, maybe not yet in force
    # ``gprocket-helper --sandbox-report``: "seccomp: ...", "landlock: ...", ...
    sandbox: tuple[str, ...] = ()

    @property
    def setuid_root(self) -> bool:
        """True when the helper runs as root whoever starts it."""
        return self.uid == 0 and bool(self.mode & stat.S_ISUID)


@dataclass(frozen=True)
class SudoFacts:
    """What ``sudo -n -l HELPER`` said (it never prompts)."""

    installed: bool
    helper: str | None = None
    allowed: bool = False
    detail: str = ""
    policy_rules: tuple[Rule, ...] = ()
    policy_refused: str | None = None


@dataclass(frozen=True)
class Facts:
    """Everything the prediction depends on; gathered once, then pure."""

    uid: int
    user: str
    gids: frozenset[int]
    effective: int
    permitted: int
    ambient: int
    bounding: int
    no_new_privs: bool
    port_start: int
    ping_range: tuple[int, int]
    prctl: bool
    strategies: tuple[str, ...]
    helper: HelperFacts | None
    helper_searched: tuple[str, ...]
    sudo: SudoFacts
    tun_device: bool  # /dev/net/tun readable and writable by this process
    tun_name: str
    netns: str
    netns_exists: bool
    listen_fds: int = 0
    venv: str | None = None
    tun_exists: bool = True  # /dev/net/tun exists (the helper may open a root-only one)
    ignored_env: tuple[str, ...] = ()  # GPROCKET_* variables ignored here, with why

    @property
    def caller(self) -> Caller:
        """The identity the helper would see."""
        return Caller(self.uid, self.gids, self.user)


@dataclass(frozen=True)
class Verdict:
    """One rung for one kind: whether it would serve, why (not), and the fix."""

    rung: str
    serves: bool
    reason: str
    fix: str | None = None


@dataclass(frozen=True)
class Diagnosis:
    """The prediction for one kind of request."""

    kind: str
    title: str
    serves: str | None
    verdicts: tuple[Verdict, ...]
    fix: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "kind": self.kind,
            "title": self.title,
            "serves": self.serves,
            "fix": self.fix,
            "rungs": [
                {"rung": v.rung, "serves": v.serves, "reason": v.reason, "fix": v.fix}
                for v in self.verdicts
            ],
        }


def _has(mask: int, cap: int) -> bool:
    return bool(mask >> cap & 1)


def _cap(cap: int) -> str:
    return cap_name(cap)


def _ping_allowed(facts: Facts) -> bool:
    low, high = facts.ping_range
    return any(low <= gid <= high for gid in facts.gids)


def _ping_fix(facts: Facts) -> str:
    gid = min(facts.gids) if facts.gids else 0
    return f'sudo sysctl -w net.ipv4.ping_group_range="{gid} {gid}"'


def _plain(kind: Kind, facts: Facts) -> Verdict:
    name = "plain"
    if kind.key == "icmp-ping":
        low, high = facts.ping_range
        if _ping_allowed(facts):
            return Verdict(name, True, f"a group of yours is in ping_group_range {low} {high}")
        return Verdict(name, False, f"none of your groups is in net.ipv4.ping_group_range "
                       f"({low} {high})", _ping_fix(facts))  # fmt: skip
    if kind.cap is None:
        return Verdict(name, False, "doctor knows no in-process way for this request")
    if kind.key == "netns":
        if not _has(facts.effective, CAP_SYS_ADMIN):
            return Verdict(name, False, "entering a namespace in-process needs CAP_SYS_ADMIN "
                           "in force (root)")  # fmt: skip
        if not facts.netns_exists:
            return Verdict(name, False, f"no namespace /run/netns/{facts.netns}",
                           f"sudo ip netns add {facts.netns}")  # fmt: skip
        return Verdict(name, True, "CAP_SYS_ADMIN is in force: setns() on a native thread")
    if kind.key == "tun" and not facts.tun_device:
        return Verdict(name, False, "/dev/net/tun is missing or not readable and writable",
                       "sudo modprobe tun")  # fmt: skip
    if facts.uid != 0 and _has(facts.effective, kind.cap):
        # The ladder's plain rung steps aside for a capability held in force.
        return Verdict(name, False, f"{_cap(kind.cap)} is in force: the capabilities rung "
                       "serves this")  # fmt: skip
    if kind.verb == "bind" and kind.port >= facts.port_start:
        return Verdict(name, True, f"net.ipv4.ip_unprivileged_port_start is {facts.port_start}")
    if _has(facts.effective, kind.cap):
        return Verdict(name, True, f"root: {_cap(kind.cap)} is in force")
    reason = f"{_cap(kind.cap)} is not in force"
    fix = None
    if kind.verb == "bind":
        reason = (f"port {kind.port} is below net.ipv4.ip_unprivileged_port_start "
                  f"({facts.port_start}) and {reason}")  # fmt: skip
        fix = (f"sudo sysctl -w net.ipv4.ip_unprivileged_port_start={kind.port} "
               "(lets every user bind from there up)")  # fmt: skip
    return Verdict(name, False, reason, fix)


def _capabilities(kind: Kind, facts: Facts) -> Verdict:
    name = "capabilities"
    if kind.key == "icmp-ping":
        return Verdict(name, False, "ping sockets depend on net.ipv4.ping_group_range, "
                       "not a capability", _ping_fix(facts))  # fmt: skip
    if kind.key == "netns":
        return Verdict(name, False, "namespaced requests go through the helper (or root)")
    if kind.cap is None:
        return Verdict(name, False, "no capability would change the kernel's answer")
    if not facts.prctl:
        return Verdict(name, False, "python-prctl is not installed", "pip install python-prctl")
    if _has(facts.permitted, kind.cap):
        return Verdict(name, True, f"{_cap(kind.cap)} is permitted: raised around the one call")
    lower = _cap(kind.cap).lower()
    if facts.venv:
        fix = f"sudo capsetup python --venv {facts.venv} --caps {lower}  (then use bin/python-caps)"
    else:
        fix = f"run with AmbientCapabilities={_cap(kind.cap)} (see: capsetup systemd)"
    return Verdict(name, False, f"{_cap(kind.cap)} is not in the permitted set", fix)


def _policy_verdict(
    rung: str,
    kind: Kind,
    facts: Facts,
    *,
    rules: tuple[Rule, ...],
    refused: str | None,
    policy_path: str,
) -> Verdict | None:
    """None when the policy grants the request, else the refusal."""
    if refused is not None:
        if DIRECTORY_REFUSAL in refused or "helper's directory" in refused:
            return Verdict(rung, False, f"the helper denies everything: {refused}",
                           "install the helper under root-only directories: "
                           "sudo capsetup install")  # fmt: skip
        return Verdict(rung, False, f"the policy denies everything: {refused}",
                       f"fix {policy_path} (check it with: capsetup policy)")  # fmt: skip
    caller = facts.caller
    who = f"user:{facts.user}"
    if kind.key == "netns":
        if grants(rules, caller, "netns", name=facts.netns) is None:
            return Verdict(rung, False, f"the policy grants no 'netns {facts.netns}' to you",
                           f"add 'allow {who} netns {facts.netns}' to {policy_path}")  # fmt: skip
        if not facts.netns_exists:
            return Verdict(rung, False, f"no namespace /run/netns/{facts.netns}",
                           f"sudo ip netns add {facts.netns}")  # fmt: skip
        return None
    if kind.key == "icmp-ping":
        return None
    if kind.key == "tun":
        if grants(rules, caller, "tun", name=facts.tun_name) is None:
            return Verdict(rung, False, f"the policy grants no 'tun {facts.tun_name}' to you",
                           f"add 'allow {who} tun {facts.tun_name}' to {policy_path}")  # fmt: skip
        return None
    if grants(rules, caller, kind.verb, proto=kind.proto, port=kind.port, family=kind.family):
        return None
    line = {
        "bind": f"bind {kind.proto} {kind.port}",
        "raw": f"raw {'icmpv6' if kind.proto == 58 else 'icmp'}",
        "packet": "packet",
    }[kind.verb]
    return Verdict(rung, False, f"the policy grants no '{line}' to you",
                   f"add 'allow {who} {line}' to {policy_path}")  # fmt: skip


def _helper(rung: str, kind: Kind, facts: Facts) -> Verdict:
    helper = facts.helper
    if helper is None or not helper.exists:
        reason = f"no helper at {helper.path}" if helper else "; ".join(facts.helper_searched)
        return Verdict(rung, False, reason or "no helper installed", "sudo capsetup install")
    if not helper.executable:
        group = helper.group or str(helper.gid)
        if helper.mode & stat.S_IXGRP and not helper.mode & stat.S_IXOTH:
            if helper.listed_in_group:
                fix = f"log out and in again (or run: newgrp {group}): you were added to {group}"
            else:
                fix = f"sudo usermod -aG {group} {facts.user}  (then log in again)"
            return Verdict(rung, False, f"{helper.path} is not executable by you: you are "
                           f"not in group {group}", fix)  # fmt: skip
        return Verdict(rung, False, f"{helper.path} is not executable by you",
                       "sudo capsetup install")  # fmt: skip
    if facts.uid != 0:
        if facts.no_new_privs:
            return Verdict(rung, False, "this process has no_new_privs set: no helper can gain "
                           "privilege", "start the program without NoNewPrivileges=")  # fmt: skip
        if helper.nosuid:
            return Verdict(rung, False, f"{helper.path} is on a nosuid mount: its privilege is "
                           "ignored", "sudo capsetup install --prefix /usr/local")  # fmt: skip
        if helper.setuid_root:
            held, how = facts.bounding, "setuid root"
        elif helper.file_caps is not None:
            held, how = helper.file_caps & facts.bounding, "file capabilities"
        else:
            return Verdict(rung, False, f"{helper.path} is neither setuid root nor carries "
                           "file capabilities", "sudo capsetup install")  # fmt: skip
        if kind.key == "icmp-ping":
            if not _ping_allowed(facts):
                return Verdict(rung, False, "the helper opens ping sockets as you: "
                               "ping_group_range still decides", _ping_fix(facts))  # fmt: skip
        elif kind.cap is not None and not _has(held, kind.cap):
            return Verdict(rung, False, f"the helper ({how}) does not get {_cap(kind.cap)}",
                           "sudo capsetup install")  # fmt: skip
    elif kind.key == "icmp-ping" and not _ping_allowed(facts):
        return Verdict(rung, False, "ping_group_range excludes your groups", _ping_fix(facts))
    if kind.key == "tun" and not facts.tun_exists:
        return Verdict(rung, False, "/dev/net/tun is missing", "sudo modprobe tun")
    denied = _policy_verdict(
        rung,
        kind,
        facts,
        rules=helper.policy_rules,
        refused=helper.policy_refused,
        policy_path=helper.policy_path,
    )
    if denied is not None:
        return denied
    mode = "root" if facts.uid == 0 else ("setuid" if helper.setuid_root else "caps")
    return Verdict(rung, True, f"{helper.path} ({mode}) and its policy allow it")


def _sudo(kind: Kind, facts: Facts) -> Verdict:
    name = "sudo"
    sudo = facts.sudo
    if not sudo.installed:
        return Verdict(name, False, "sudo is not installed")
    if sudo.helper is None:
        return Verdict(name, False, "no helper to run through sudo", "sudo capsetup install")
    if facts.no_new_privs:
        return Verdict(name, False, "no_new_privs is set: sudo cannot gain privilege")
    if not sudo.allowed:
        fix = f"sudo capsetup sudoers --user {facts.user}"
        return Verdict(name, False, f"sudo -n -l {sudo.helper} says no: {sudo.detail}", fix)
    if kind.key == "icmp-ping" and not _ping_allowed(facts):
        return Verdict(name, False, "the helper opens ping sockets as you: ping_group_range "
                       "still decides", _ping_fix(facts))  # fmt: skip
    if kind.key == "tun" and not facts.tun_exists:
        return Verdict(name, False, "/dev/net/tun is missing", "sudo modprobe tun")
    policy = str(Path(os.path.realpath(sudo.helper)).parent / "policy")
    denied = _policy_verdict(
        name, kind, facts, rules=sudo.policy_rules, refused=sudo.policy_refused, policy_path=policy
    )
    if denied is not None:
        return denied
    return Verdict(name, True, f"sudo runs {sudo.helper} without a password")


def _inherited(facts: Facts) -> Verdict:
    if facts.listen_fds:
        return Verdict("inherited", False, f"{facts.listen_fds} socket(s) passed in by systemd; "
                       "doctor cannot tell which request they match")  # fmt: skip
    return Verdict("inherited", False, "no sockets passed in (LISTEN_FDS unset)")


def _verdict(rung: str, kind: Kind, facts: Facts) -> Verdict:
    if rung == "inherited":
        return _inherited(facts)
    if rung == "plain":
        return _plain(kind, facts)
    if rung == "capabilities":
        return _capabilities(kind, facts)
    if rung in ("broker", "helper"):
        return _helper(rung, kind, facts)
    if rung == "sudo":
        return _sudo(kind, facts)
    return Verdict(rung, False, "doctor does not know this rung")


_FIX_PREFERENCE = ("broker", "helper", "capabilities", "sudo", "plain", "inherited")


def diagnose(facts: Facts, kinds: tuple[Kind, ...] = KINDS) -> tuple[Diagnosis, ...]:
    """For each kind, the rung that would serve (first in ladder order) and why not the rest.

    Pure: depends on ``facts`` only. Rungs after the serving one are still
    judged, so the report shows every way the request could be served.
    """
    out = []
    for kind in kinds:
        verdicts = tuple(_verdict(rung, kind, facts) for rung in facts.strategies)
        serving = next((v.rung for v in verdicts if v.serves), None)
        fix = None
        if serving is None:
            by_rung = {v.rung: v.fix for v in verdicts if v.fix}
            # Only the sysctl opens ping sockets, whatever rung asks the kernel.
            order = ("plain",) if kind.key == "icmp-ping" else _FIX_PREFERENCE
            fix = next((by_rung[r] for r in order if r in by_rung), None)
        out.append(Diagnosis(kind.key, kind.title, serving, verdicts, fix))
    return tuple(out)


def notes(facts: Facts) -> tuple[str, ...]:
    """What the report should say besides the rungs: ignored variables, ping, strong rules.

    Pure. One line each: a GPROCKET_* variable ignored in this privileged
    process (and why), whether net.ipv4.ping_group_range covers your groups
    and the helper's group, and every raw/packet/device rule in force for you
    with what its holder can do.
    """
    out = list(facts.ignored_env)
    low, high = facts.ping_range
    shown = f"net.ipv4.ping_group_range is {low} {high}"
    if low > high:
        out.append(f"{shown}: ICMP echo sockets are closed to every group")
    else:
        yours = "covers a group of yours" if _ping_allowed(facts) else "covers none of your groups"
        out.append(f"{shown}: {yours}")
    helper = facts.helper
    if helper is not None and helper.exists and helper.group:
        covered = low <= helper.gid <= high
        out.append(f"the helper's group {helper.group} (gid {helper.gid}) is "
                   f"{'' if covered else 'NOT '}in ping_group_range"
                   f"{'' if covered else ': sudo capsetup install opens it'}")  # fmt: skip
    if helper is not None:
        out.extend(_sandbox_notes(helper.sandbox))
    if helper is not None and helper.policy_refused is None:
        for rule in helper.policy_rules:
            warning = rule_warning(rule)
            if warning is not None and subject_matches(rule, facts.caller):
                out.append(f"policy {helper.policy_path} {warning}")
    return tuple(out)


def _sandbox_notes(report: tuple[str, ...]) -> list[str]:
    """The helper's own account of its confinement, and what is missing from it."""
    out = [f"helper sandbox {line}" for line in report]
    for line in report:
        key, _, value = line.partition(": ")
        if key in ("seccomp", "landlock") and value.startswith("off"):
            fenced = ("its system calls are not filtered" if key == "seccomp"
                      else "its file access is not fenced (a newer kernel, or lsm=landlock "
                           "at boot, brings it)")
            out.append(f"warning: the helper runs without {key}: {fenced}")
    return out


# ---- gathering (I/O) ----


def _status_fields() -> dict[str, str]:
    fields = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _read_int_file(path: str, default: int) -> int:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _ping_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ping_group_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 1, 0


def _in_group_file(user: str, gid: int) -> bool:
    try:
        entry = grp.getgrgid(gid)
    except KeyError:
        return False
    return user in entry.gr_mem


def sandbox_report(path: str, timeout: float = 5.0) -> tuple[str, ...]:
    """``path --sandbox-report``'s lines, or () when this user cannot run it.

    The helper confines itself as a broker would and says what took effect
    (helper/PROTOCOL.md); it reads no request and opens nothing.
    """
    if not os.access(path, os.X_OK):
        return ()
    try:
        done = subprocess.run([path, "--sandbox-report"], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False,
                              env={})
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if done.returncode != 0:
        return ()
    return tuple(line for line in done.stdout.splitlines() if ": " in line)


def helper_facts(path: str, user: str) -> HelperFacts:
    """What this user can know about the helper at ``path``.

    Only its ``--sandbox-report`` is run (it serves no request).
    """
    try:
        st = os.stat(path)
    except OSError:
        return HelperFacts(path, False)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    try:
        caps = read_file_caps(path)
    except (OSError, ValueError):
        caps = None
    try:
        nosuid = mount_of(Path(path)).nosuid
    except (OSError, LookupError):
        nosuid = False
    policy = load_helper_policy(path)
    return HelperFacts(
        path=path,
        exists=stat.S_ISREG(st.st_mode),
        executable=os.access(path, os.X_OK),
        uid=st.st_uid,
        gid=st.st_gid,
        group=group,
        mode=stat.S_IMODE(st.st_mode),
        file_caps=caps.permitted if caps else None,
        nosuid=nosuid,
        policy_path=str(policy.path),
        policy_rules=policy.rules,
        policy_refused=policy.refused,
        listed_in_group=_in_group_file(user, st.st_gid),
        sandbox=sandbox_report(path),
    )


def sudo_facts(helper: str | None, timeout: float = 10.0) -> SudoFacts:
    """Ask ``sudo -n -l HELPER`` (never prompts) whether the rule exists."""
    sudo = shutil.which("sudo", path=_SUDO_PATH)
    if sudo is None:
        return SudoFacts(False)
    if helper is None:
        return SudoFacts(True)
    policy = load_helper_policy(helper)
    try:
        done = subprocess.run(
            [sudo, "-n", "-l", helper],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            env={"PATH": _SUDO_PATH, "LC_ALL": "C"},
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return SudoFacts(True, helper, False, str(err), policy.rules, policy.refused)
    said = (done.stderr.strip() or done.stdout.strip()).splitlines()
    detail = said[0] if said else f"exit {done.returncode}"
    return SudoFacts(True, helper, done.returncode == 0, detail, policy.rules, policy.refused)


def _strategies() -> tuple[str, ...]:
    env = trusted_getenv("GPROCKET_STRATEGIES")
    if env:
        return tuple(part.strip().lower() for part in env.split(",") if part.strip())
    return DEFAULT_ORDER


def gather(
    helper: str | None = None,
    *,
    netns: str = "gprocket",
    tun_name: str = "gp0",
    ask_sudo: bool = True,
) -> Facts:
    """Read every fact about this process the prediction needs.

    ``helper`` overrides the search (like ``helper=`` on gprocket.open).
    """
    fields = _status_fields()
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    searched: tuple[str, ...] = ()
    try:
        path: str | None = locate(helper)
    except RungUnavailable as err:
        path = None
        searched = (err.reason,)
    hfacts = helper_facts(path, user) if path else None
    sudo_helper = path if path else (str(PACKAGED) if PACKAGED.exists() else None)
    sudo = sudo_facts(sudo_helper) if ask_sudo else SudoFacts(shutil.which("sudo") is not None)
    gids = frozenset({os.getgid(), *os.getgroups()})
    prefix_venv = sys.prefix if sys.prefix != sys.base_prefix else None
    listen_pid = os.environ.get("LISTEN_PID", "")
    listen_fds = os.environ.get("LISTEN_FDS", "0")
    fds = int(listen_fds) if listen_pid == str(os.getpid()) and listen_fds.isdigit() else 0
    return Facts(
        uid=uid,
        user=user,
        gids=gids,
        effective=int(fields.get("CapEff", "0"), 16),
        permitted=int(fields.get("CapPrm", "0"), 16),
        ambient=int(fields.get("CapAmb", "0"), 16),
        bounding=int(fields.get("CapBnd", "0"), 16),
        no_new_privs=fields.get("NoNewPrivs", "0") == "1",
        port_start=_read_int_file("/proc/sys/net/ipv4/ip_unprivileged_port_start", 1024),
        ping_range=_ping_range(),
        prctl=importlib.util.find_spec("_prctl") is not None,
        strategies=_strategies(),
        helper=hfacts,
        helper_searched=searched,
        sudo=sudo,
        tun_device=os.access("/dev/net/tun", os.R_OK | os.W_OK),
        tun_exists=os.path.exists("/dev/net/tun"),
        tun_name=tun_name,
        netns=netns,
        netns_exists=os.path.exists(f"/run/netns/{netns}"),
        listen_fds=fds,
        venv=prefix_venv,
        ignored_env=ignored_environment(),
    )
