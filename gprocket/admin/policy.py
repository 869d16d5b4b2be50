"""The helper's policy file (docs/POLICY.md): parse, validate, evaluate, check.

The C helper is the authority at run time; this reader follows the same
format so that ``capsetup`` can validate before it writes and ``gprocket
doctor`` can predict what the helper will allow without running it.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from .locations import POLICY_MAX, directory_refusal, policy_file_refusal

__all__ = [
    "DEFAULT_POLICY",
    "DEFAULT_RULES",
    "DEFAULT_RULES_TEXT",
    "RULE_POWERS",
    "Caller",
    "LoadedPolicy",
    "PolicyCheck",
    "PolicyError",
    "Rule",
    "check_with_helper",
    "grants",
    "load_helper_policy",
    "load_policy",
    "parse_policy",
    "rule_warning",
    "subject_matches",
]

MAX_RULES = 256
MAX_LINE = 255
MAX_SIZE = POLICY_MAX
DEVICE_ALLOWLIST = frozenset({"net/tun"})
BIND_PROTOS = frozenset({"tcp", "udp", "sctp", "any"})
RAW_NAMES = {"icmp": 1, "icmpv6": 58}

DEFAULT_RULES_TEXT = "allow * bind any 1-1023\n"
DEFAULT_POLICY = (
    "# gprocket helper policy (docs/POLICY.md), written by capsetup.\n"
    "# Whoever may run the helper (members of its group) may bind low ports.\n"
    "# ICMP echo goes through ping sockets (net.ipv4.ping_group_range, which\n"
    "# capsetup install opens to the group). Raw and packet sockets, TUN/TAP\n"
    "# devices and namespaces need explicit lines; a raw rule lets its holder\n"
    "# send any IP packet with any source address, a packet rule any frame:\n"
    "#   allow group:lab raw icmp,icmpv6\n"
    "#   allow group:lab packet\n"
    "#   allow group:lab tun gp* net 10.9.0.0/24,fd00:9::/64 mtu 1280-9000\n"
    "#   allow user:monitor netns probe\n" + DEFAULT_RULES_TEXT
)

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


class PolicyError(ValueError):
    """A policy line that does not parse; ``line`` is its 1-based number."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class Rule:
    """One ``allow`` line."""

    line: int
    subject: str  # "*", "user:X", "group:X"
    subject_id: int | None  # the uid or gid it names; None for "*"
    verb: str  # bind raw packet tun device netns
    protos: frozenset[str] = frozenset()
    ports: tuple[int, int] = (0, 0)
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    raw_protos: frozenset[int] | None = None  # None = any
    name: str = ""  # tun pattern, device name, netns name
    reuse: bool = False  # bind: SO_REUSEADDR/SO_REUSEPORT on datagram sockets
    nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # tun: addresses
    mtu: tuple[int, int] | None = None  # tun: the MTU range; None = no MTU may be set
    text: str = ""  # the line as written, without its comment

    def __str__(self) -> str:
        return f"line {self.line}: {self.text or f'allow {self.subject} {self.verb}'}"


@dataclass(frozen=True)
class Caller:
    """Who asks: what the kernel would tell the helper."""

    uid: int
    gids: frozenset[int]
    user_name: str | None = None

    @classmethod
    def current(cls) -> Caller:
        """The calling process (real uid, primary and supplementary groups)."""
        uid = os.getuid()
        try:
            name: str | None = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = None
        return cls(uid=uid, gids=frozenset({os.getgid(), *os.getgroups()}), user_name=name)


def _lookup_id(path: str, name: str) -> int | None:
    # POLICY.md: names come from /etc/passwd and /etc/group, never NSS.
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name:
            try:
                return int(fields[2])
            except ValueError:
                return None
    return None


def _valid_name(text: str, *, allow_slash: bool = False) -> bool:
    if text in (".", "..") or not text:
        return False
    if allow_slash:
        return all(_NAME.match(part) for part in text.split("/"))
    return bool(_NAME.match(text))


def _ports(text: str, line: int, what: str = "port", lowest: int = 1) -> tuple[int, int]:
    """N or N-M inside lowest..65535 (ports 1.., MTUs 68..)."""
    first, sep, last = text.partition("-")
    try:
        low = int(first)
        high = int(last) if sep else low
    except ValueError:
        raise PolicyError(line, f"bad {what} range {text!r}") from None
    if not (lowest <= low <= high <= 65535):
        raise PolicyError(line, f"{what} range {text!r} outside {lowest}..65535")
    return low, high


def _subject(text: str, line: int) -> tuple[str, int | None]:
    """The subject and its uid/gid, resolved now as the helper does.

    An unknown name makes the whole file unusable for the helper, so it
    is an error here too.
    """
    if text == "*":
        return text, None
    kind, sep, value = text.partition(":")
    if not sep or kind not in ("user", "group") or not _valid_name(value):
        raise PolicyError(line, f"bad subject {text!r} (want *, user:NAME|UID, group:NAME|GID)")
    if value.isdigit():
        return text, int(value)
    ident = _lookup_id("/etc/passwd" if kind == "user" else "/etc/group", value)
    if ident is None:
        raise PolicyError(line, f"unknown {kind} {value!r} in subject {text!r}")
    return text, ident


def _parse_line(fields: list[str], line: int) -> Rule:
    if fields[0] != "allow":
        raise PolicyError(line, f"unknown keyword {fields[0]!r} (only 'allow')")
    if len(fields) < 3:
        raise PolicyError(line, "want: allow SUBJECT VERB ...")
    subject, ident = _subject(fields[1], line)
    verb, args = fields[2], fields[3:]
    if verb == "bind":
        reuse = bool(args) and args[-1] == "reuse"
        if reuse:
            args = args[:-1]
        if len(args) not in (2, 3):
            raise PolicyError(
                line, "want: allow SUBJECT bind PROTOS PORTS [ADDRESS[/PREFIX]] [reuse]")
        # Empty items are skipped, as the helper's strtok does.
        protos = frozenset(item for item in args[0].split(",") if item)
        if not protos or not protos <= BIND_PROTOS:
            raise PolicyError(line, f"bad bind protocols {args[0]!r} (tcp, udp, sctp, any)")
        network = None
        if len(args) == 3:
            try:
                network = ipaddress.ip_network(args[2], strict=False)
            except ValueError:
                raise PolicyError(line, f"bad address {args[2]!r}") from None
        return Rule(line, subject, ident, verb, protos=protos, ports=_ports(args[1], line),
                    network=network, reuse=reuse)  # fmt: skip
    if verb == "raw":
        if len(args) != 1:
            raise PolicyError(line, "want: allow SUBJECT raw PROTOS")
        numbers: set[int] = set()
        for item in filter(None, args[0].split(",")):
            if item == "any":
                return Rule(line, subject, ident, verb, raw_protos=None)
            if item in RAW_NAMES:
                numbers.add(RAW_NAMES[item])
            elif item.isdigit() and int(item) <= 255:
                numbers.add(int(item))
            else:
                raise PolicyError(line, f"bad raw protocol {item!r} (icmp, icmpv6, 0..255, any)")
        if not numbers:
            raise PolicyError(line, "raw needs at least one protocol")
        return Rule(line, subject, ident, verb, raw_protos=frozenset(numbers))
    if verb == "packet":
        if args:
            raise PolicyError(line, "packet takes no arguments (an interface cannot be enforced)")
        return Rule(line, subject, ident, verb)
    if verb == "tun":
        return _parse_tun(args, line, subject, ident)
    if verb == "device":
        if len(args) != 1 or not _valid_name(args[0], allow_slash=True):
            raise PolicyError(line, "want: allow SUBJECT device NAME")
        if args[0] not in DEVICE_ALLOWLIST:
            raise PolicyError(line, f"device {args[0]!r} is not in the helper's allowlist "
                              f"({', '.join(sorted(DEVICE_ALLOWLIST))})")  # fmt: skip
        return Rule(line, subject, ident, verb, name=args[0])
    if verb == "netns":
        if len(args) != 1 or not _valid_name(args[0]) or len(args[0]) > 31:
            raise PolicyError(line, "want: allow SUBJECT netns NAME (at most 31 characters)")
        return Rule(line, subject, ident, verb, name=args[0])
    raise PolicyError(line, f"unknown verb {verb!r} (bind, raw, packet, tun, device, netns)")


def _parse_tun(args: list[str], line: int, subject: str, ident: int | None) -> Rule:
    """tun PATTERN [net NET,...] [mtu N[-M]], as the helper's parse_tun reads it."""
    usage = "want: allow SUBJECT tun PATTERN [net ADDR/LEN,...] [mtu N-M]"
    if "persist" in args:
        raise PolicyError(line, "persist removed (any holder can persist: docs/POLICY.md)")
    if not args or len(args) % 2 == 0:
        raise PolicyError(line, usage)
    stem = args[0].removesuffix("*")
    if (stem or not args[0].endswith("*")) and not _valid_name(stem):
        raise PolicyError(line, f"bad tun pattern {args[0]!r}")
    if len(stem) > 15:
        raise PolicyError(line, f"tun pattern {args[0]!r} longer than an interface name")
    options = dict(zip(args[1::2], args[2::2], strict=True))
    if len(options) != len(args[1::2]) or not set(options) <= {"net", "mtu"}:
        raise PolicyError(line, usage)
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for item in filter(None, options.get("net", "").split(",")):
        try:
            if "/" not in item:
                raise ValueError(item)
            nets.append(ipaddress.ip_network(item))  # strict: the host bits must be zero
        except ValueError:
            raise PolicyError(line, f"bad tun network {item!r} (want ADDR/LEN, host bits zero)"
                              ) from None
    if "net" in options and not 1 <= len(nets) <= 8:
        raise PolicyError(line, "net takes 1 to 8 networks")
    mtu: tuple[int, int] | None = None
    if "mtu" in options:
        mtu = _ports(options["mtu"], line, "mtu", 68)
    return Rule(line, subject, ident, "tun", name=args[0], nets=tuple(nets), mtu=mtu)


def parse_policy(text: str) -> tuple[Rule, ...]:
    """Parse policy text into rules. Raises PolicyError naming the first bad line."""
    if len(text.encode()) > MAX_SIZE:
        raise PolicyError(0, f"policy larger than {MAX_SIZE} bytes")
    rules = []
    for number, raw in enumerate(text.split("\n"), start=1):
        if len(raw.encode()) > MAX_LINE:
            raise PolicyError(number, f"line longer than {MAX_LINE} bytes")
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        rules.append(replace(_parse_line(fields, number), text=" ".join(fields)))
        if len(rules) > MAX_RULES:
            raise PolicyError(number, f"more than {MAX_RULES} rules")
    return tuple(rules)


DEFAULT_RULES = parse_policy(DEFAULT_RULES_TEXT)


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy as the helper would see it: rules in force, or why all is denied."""

    path: Path
    exists: bool
    rules: tuple[Rule, ...]
    refused: str | None  # why the helper denies everything; None if usable

    @property
    def is_default(self) -> bool:
        """True when no file exists and the built-in defaults apply."""
        return not self.exists


def load_policy(path: Path) -> LoadedPolicy:
    """Read the policy at ``path`` as the helper beside it would (fail closed).

    The helper's order (helper.c load_policy): the directories from ``/``
    down to the policy's directory, then the file, then its lines; with no
    file the defaults apply, but only in a root-only directory. Never raises
    for a bad file: ``refused`` says why everything is denied, in the
    helper's words.
    """
    directory = directory_refusal(path.parent)
    if directory is not None:
        return LoadedPolicy(path, os.path.lexists(path), (), directory)
    if not os.path.lexists(path):
        return LoadedPolicy(path, False, DEFAULT_RULES, None)
    try:
        problem = policy_file_refusal(path)
        if problem is not None:
            return LoadedPolicy(path, True, (), problem)
        return LoadedPolicy(path, True, parse_policy(path.read_text()), None)
    except PolicyError as err:
        return LoadedPolicy(path, True, (), str(err))
    except (OSError, UnicodeDecodeError) as err:
        return LoadedPolicy(path, True, (), f"cannot read {path}: {err}")


def load_helper_policy(helper: Path | str) -> LoadedPolicy:
    """The policy the helper at ``helper`` reads: beside its real path (links resolved)."""
    return load_policy(Path(os.path.realpath(helper)).parent / "policy")


def subject_matches(rule: Rule, caller: Caller) -> bool:
    """True when ``rule``'s subject names ``caller`` (``*`` names everyone)."""
    if rule.subject_id is None:
        return True
    if rule.subject.startswith("user:"):
        return rule.subject_id == caller.uid
    return rule.subject_id in caller.gids


def _tun_matches(pattern: str, name: str) -> bool:
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern


def grants(
    rules: Iterable[Rule],
    caller: Caller,
    verb: str,
    *,
    proto: str | int | None = None,
    port: int = 0,
    family: int = 4,
    address: str | None = None,
    name: str | None = None,
) -> Rule | None:
    """The first rule granting this request to ``caller``, or None.

    ``proto`` is "tcp"/"udp"/"sctp" for bind, an IP protocol number for raw;
    ``family`` 4 or 6 and ``address`` (None = the wildcard) for bind;
    ``name`` is the tun name or netns name (None = "any name": the first
    rule of that verb counts). Mirrors the helper's gp_authorize.
    """
    for rule in rules:
        if rule.verb != verb or not subject_matches(rule, caller):
            continue
        if verb == "bind":
            if "any" not in rule.protos and proto not in rule.protos:
                continue
            if not rule.ports[0] <= port <= rule.ports[1]:
                continue
            if rule.network is not None:
                if rule.network.version != family:
                    continue
                if address is None:
                    if rule.network.prefixlen != 0:
                        continue
                elif ipaddress.ip_address(address) not in rule.network:
                    continue
        elif verb == "raw":
            if rule.raw_protos is not None and proto not in rule.raw_protos:
                continue
        elif verb == "tun":
            if name is not None and not _tun_matches(rule.name, name):
                continue
        elif verb in ("netns", "device") and name is not None and rule.name != name:
            continue
        return rule
    return None


@dataclass(frozen=True)
class PolicyCheck:
    """What ``gprocket-helper --check-policy`` said."""

    ok: bool
    output: str
    returncode: int


def check_with_helper(helper: Path, timeout: float = 10.0) -> PolicyCheck:
    """Run the installed helper's own policy check (the authority).

    Raises OSError when the helper cannot be executed.
    """
    done = subprocess.run(
        [str(helper), "--check-policy"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={},
        stdin=subprocess.DEVNULL,
    )
    output = (done.stdout + done.stderr).strip()
    return PolicyCheck(ok=done.returncode == 0, output=output, returncode=done.returncode)


# What the holder of each dangerous grant can do with what it gets
# (docs/POLICY.md); capsetup status and doctor print it wherever such a rule
# is in force.
RULE_POWERS = {
    "raw": "may send any IP packet with any source address",
    "packet": "may send any frame and read every frame on every interface",
    "device": "attaches to every ownerless TUN/TAP device and reads its traffic",
}


def rule_warning(rule: Rule) -> str | None:
    """``line N: allow ...: <what its holder can do>`` for a dangerous rule, else None."""
    power = RULE_POWERS.get(rule.verb)
    return None if power is None else f"{rule}: {power}"
