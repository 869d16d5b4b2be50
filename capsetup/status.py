"""``capsetup status``: what is installed under a prefix, and whether it is safe.

Reports what ``ls -l``, ``getcap``, the helper's own ``--check-policy`` and
the sudoers drop-in say; ``problems`` lists everything unsafe or broken (the
command then exits 1).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from capsetup import pinggroup
from capsetup._layout import SUDOERS_DIR, Layout, Manifest, SetupError, packaged_helper
from gprocket.admin.filecaps import packaged_file_caps, read_file_caps
from gprocket.admin.locations import chain_problems, mount_of
from gprocket.admin.policy import check_with_helper, load_helper_policy, rule_warning

__all__ = ["HelperStatus", "Status", "status"]


def _name(lookup: Any, ident: int) -> str:
    try:
        return str(lookup(ident)[0])
    except KeyError:
        return str(ident)


@dataclass(frozen=True)
class HelperStatus:
    """The installed helper as ``ls -l`` and ``getcap`` show it."""

    path: str
    exists: bool
    owner: str | None = None
    group: str | None = None
    mode: str | None = None  # octal, e.g. "0750" or "4750"
    setuid: bool = False
    caps: str | None = None  # getcap notation, None when no capabilities
    expected_caps: str | None = None
    nosuid_mount: bool = False
    up_to_date: bool | None = None


@dataclass(frozen=True)
class PolicyStatus:
    """The policy file and the helper's verdict on it."""

    path: str
    exists: bool
    default: bool = False
    valid: bool | None = None
    check_output: str = ""
    warnings: tuple[str, ...] = ()  # rules in force and what their holders can do


@dataclass(frozen=True)
class PingStatus:
    """net.ipv4.ping_group_range here, and what capsetup install set."""

    range: tuple[int, int] | None  # None: unreadable
    gid: int | None  # the helper's group
    group: str | None
    covered: bool
    conf: str | None = None  # the sysctl.d file capsetup wrote
    previous: tuple[int, int] | None = None


@dataclass(frozen=True)
class SudoersStatus:
    """The sudoers drop-in for this prefix."""

    path: str
    exists: bool
    rules: tuple[str, ...] = ()
    valid: bool | None = None


@dataclass(frozen=True)
class PythonStatus:
    """An interpreter copy made by ``capsetup python``."""

    path: str
    exists: bool
    caps: str | None = None
    effective: bool = False


@dataclass(frozen=True)
class Status:
    """Everything ``capsetup status`` reports."""

    prefix: str
    mode: str | None
    helper: HelperStatus
    policy: PolicyStatus
    sudoers: SudoersStatus
    pythons: tuple[PythonStatus, ...]
    ping: PingStatus
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when nothing is unsafe or broken."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``ok`` included)."""
        data = asdict(self)
        data["ok"] = self.ok
        return data


def _helper_status(layout: Layout, problems: list[str]) -> HelperStatus:
    path = layout.helper
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        problems.append(f"no helper at {path}: run `capsetup install --prefix {layout.prefix}`")
        return HelperStatus(str(path), False)
    problems.extend(chain_problems(path))
    if not stat.S_ISREG(st.st_mode):
        return HelperStatus(str(path), True)
    mode = stat.S_IMODE(st.st_mode)
    caps = read_file_caps(path)
    setuid = bool(mode & stat.S_ISUID) and st.st_uid == 0
    try:
        expected = packaged_file_caps(packaged_helper())
        expected_text: str | None = expected.text
    except (OSError, ValueError, SetupError):
        expected, expected_text = None, None
    if mode & (stat.S_IROTH | stat.S_IXOTH):
        problems.append(f"{path} can be run by every user (mode {mode:04o}): want 0750")
    if caps is None and not setuid:
        problems.append(f"{path} has neither file capabilities nor setuid root: it cannot help")
    if caps is not None and expected is not None and not caps.same_set(expected):
        problems.append(f"{path} has capabilities {caps.text}, expected {expected.text}")
    nosuid = mount_of(path).nosuid
    if nosuid:
        problems.append(f"{path} is on a nosuid mount: its capabilities and setuid are ignored")
    try:
        packaged = packaged_helper().read_bytes()
        up_to_date: bool | None = packaged == path.read_bytes()
    except (OSError, SetupError):
        up_to_date = None
    return HelperStatus(
        path=str(path),
        exists=True,
        owner=_name(pwd.getpwuid, st.st_uid),
        group=_name(grp.getgrgid, st.st_gid),
        mode=f"{mode:04o}",
        setuid=setuid,
        caps=caps.text if caps else None,
        expected_caps=expected_text,
        nosuid_mount=nosuid,
        up_to_date=up_to_date,
    )


def _policy_status(layout: Layout, helper_ok: bool, problems: list[str]) -> PolicyStatus:
    # The helper's own rules: its directories (even with no policy file), then the file.
    loaded = load_helper_policy(layout.helper)
    if loaded.refused:
        problems.append(f"policy {layout.policy} denies everything: {loaded.refused}")
    valid: bool | None = loaded.refused is None
    output = ""
    if helper_ok and os.access(layout.helper, os.X_OK):
        try:
            check = check_with_helper(layout.helper)
        except (OSError, subprocess.TimeoutExpired) as err:
            problems.append(f"cannot run {layout.helper} --check-policy: {err}")
        else:
            output = check.output
            if not check.ok:
                valid = False
                if not loaded.refused:
                    problems.append(f"the helper refuses policy {layout.policy}: {check.output}")
    warnings = tuple(w for w in map(rule_warning, loaded.rules) if w is not None)
    return PolicyStatus(str(layout.policy), loaded.exists, loaded.is_default, valid, output,
                        warnings)  # fmt: skip


def _ping_status(layout: Layout, manifest: Manifest, problems: list[str]) -> PingStatus:
    try:
        current: tuple[int, int] | None = pinggroup.read_range()
    except SetupError:
        current = None
    gid: int | None = None
    try:
        gid = os.stat(layout.helper).st_gid
    except OSError:
        gid = None
    group = _name(grp.getgrgid, gid) if gid is not None else manifest.group
    covered = current is not None and gid is not None and current[0] <= gid <= current[1]
    if manifest.ping_applied is not None:
        if not covered:
            problems.append(f"group {group} is no longer in {pinggroup.KEY} (now "
                            f"{current[0] if current else '?'} {current[1] if current else '?'}): "
                            "its members cannot ping; re-run capsetup install")  # fmt: skip
        if manifest.ping_conf and not os.path.exists(manifest.ping_conf):
            problems.append(f"{manifest.ping_conf} is gone: the ping range is lost at reboot")
    return PingStatus(current, gid, group, covered, manifest.ping_conf, manifest.ping_previous)


def _sudoers_status(layout: Layout, sudoers_dir: Path, problems: list[str]) -> SudoersStatus:
    path = layout.sudoers_file(sudoers_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return SudoersStatus(str(path), False)
    except PermissionError:
        # Drop-ins are root 0440: others can only tell that one exists.
        return SudoersStatus(str(path), True)
    rules = tuple(
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )
    problems.extend(chain_problems(path))
    done = subprocess.run(["visudo", "-cf", str(path)], capture_output=True, text=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        problems.append(f"sudoers drop-in {path} does not parse: {done.stdout.strip()}")
    return SudoersStatus(str(path), True, rules, done.returncode == 0)


def _python_status(paths: tuple[str, ...], problems: list[str]) -> tuple[PythonStatus, ...]:
    out = []
    for name in paths:
        path = Path(name)
        if not path.exists():
            problems.append(f"interpreter copy {path} is gone (capsetup remove cleans the record)")
            out.append(PythonStatus(name, False))
            continue
        caps = read_file_caps(path)
        if caps is not None and caps.effective:
            problems.append(f"{path} has effective file capabilities ({caps.text}): every "
                            "program it runs holds them; want permitted only (+p)")  # fmt: skip
        out.append(PythonStatus(name, True, caps.text if caps else None,
                                bool(caps and caps.effective)))  # fmt: skip
    return tuple(out)


def status(prefix: str | Path | None = None, *, sudoers_dir: Path = SUDOERS_DIR) -> Status:
    """Inspect the install under ``prefix``; never changes anything."""
    layout = Layout.of(prefix)
    manifest = Manifest.load(layout)
    problems: list[str] = []
    helper = _helper_status(layout, problems)
    helper_ok = helper.exists and not problems
    policy = _policy_status(layout, helper_ok, problems)
    sudoers = _sudoers_status(layout, sudoers_dir, problems)
    pythons = _python_status(manifest.pythons, problems)
    ping = _ping_status(layout, manifest, problems)
    return Status(
        prefix=str(layout.prefix),
        mode=manifest.mode,
        helper=helper,
        policy=policy,
        sudoers=sudoers,
        pythons=pythons,
        ping=ping,
        problems=tuple(problems),
    )
