"""The ``capsetup`` command: install gprocket's privilege correctly.

Exit codes: 0 done (or nothing to change), 1 refused or failed, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from capsetup._layout import DEFAULT_GROUP, DEFAULT_PREFIX, SUDOERS_DIR, Layout, SetupError
from capsetup.install import install, install_warnings, remove
from capsetup.interpreter import WARNING, install_python
from capsetup.pinggroup import SYSCTL_DIR
from capsetup.status import Status, status
from capsetup.sudoers import install_sudoers
from capsetup.systemd import parse_listen, render_units
from gprocket.admin.filecaps import cap_mask, cap_names
from gprocket.admin.policy import load_policy

__all__ = ["main"]


def _print_changes(changes: list[str]) -> None:
    if not changes:
        print("nothing to change")
    for line in changes:
        print(line)


def _cmd_install(args: argparse.Namespace) -> int:
    _print_changes(install(args.prefix, mode=args.mode, group=args.group,
                           create_group=args.create_group, ping_group=args.ping_group,
                           sysctl_dir=args.sysctl_dir))  # fmt: skip
    for warning in install_warnings(args.prefix):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    _print_changes(remove(args.prefix, purge=args.purge))
    return 0


def _render_status(report: Status) -> str:
    h = report.helper
    lines = [f"prefix:   {report.prefix} (mode {report.mode or 'not recorded'})"]
    if h.exists:
        caps = h.caps or "none"
        lines.append(f"helper:   {h.path} {h.owner}:{h.group} {h.mode} "
                     f"{'setuid ' if h.setuid else ''}caps={caps}")  # fmt: skip
        if h.up_to_date is False:
            lines.append("          differs from the packaged helper (re-run install)")
    else:
        lines.append(f"helper:   {h.path} not installed")
    p = report.policy
    verdict = {True: "valid", False: "REFUSED", None: "not checked"}[p.valid]
    lines.append(f"policy:   {p.path}{' (no file: defaults)' if p.default else ''} {verdict}")
    lines.extend(f"          {line}" for line in p.check_output.splitlines())
    lines.extend(f"warning:  {warning}" for warning in p.warnings)
    g = report.ping
    shown = f"{g.range[0]} {g.range[1]}" if g.range else "unreadable"
    who = f"group {g.group} (gid {g.gid})" if g.gid is not None else "the helper's group"
    lines.append(f"ping:     net.ipv4.ping_group_range {shown}: {who} "
                 f"{'may' if g.covered else 'may NOT'} use ICMP echo sockets")  # fmt: skip
    if g.conf:
        previous = f"{g.previous[0]} {g.previous[1]}" if g.previous else "?"
        lines.append(f"          set by capsetup in {g.conf} (remove restores {previous})")
    s = report.sudoers
    lines.append(f"sudoers:  {s.path} {'present' if s.exists else 'none'}")
    lines.extend(f"          {rule}" for rule in s.rules)
    for py in report.pythons:
        lines.append(f"python:   {py.path} caps={py.caps or 'none'}")
    lines.extend(f"PROBLEM:  {problem}" for problem in report.problems)
    lines.append("status:   ok" if report.ok else "status:   UNSAFE OR BROKEN")
    return "\n".join(lines)


def _cmd_status(args: argparse.Namespace) -> int:
    report = status(args.prefix, sudoers_dir=args.sudoers_dir)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(_render_status(report))
    return 0 if report.ok else 1


def _cmd_sudoers(args: argparse.Namespace) -> int:
    _print_changes(install_sudoers(args.prefix, user=args.user, group=args.group,
                                   sudoers_dir=args.sudoers_dir))  # fmt: skip
    return 0


def _cmd_systemd(args: argparse.Namespace) -> int:
    listen = tuple(parse_listen(item) for item in args.listen)
    print(render_units(args.name, user=args.user, exec_start=args.exec_start, caps=args.caps,
                       listen=listen), end="")  # fmt: skip
    return 0


def _cmd_python(args: argparse.Namespace) -> int:
    copy, changes = install_python(args.venv, prefix=args.prefix, caps=args.caps,
                                   group=args.group)  # fmt: skip
    _print_changes(changes)
    caps = ",".join(cap_names(cap_mask(args.caps)))
    print(WARNING.format(path=copy, caps=caps), file=sys.stderr)
    return 0


def _cmd_policy(args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else Layout.of(args.prefix).policy
    loaded = load_policy(path)
    if loaded.refused:
        print(f"{path}: refused, the helper would deny everything: {loaded.refused}")
        return 1
    print(f"{path}: {'no file, defaults apply' if loaded.is_default else 'valid'}")
    for rule in loaded.rules:
        print(f"  {rule}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="capsetup", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], int], text: str,
                prefix: bool = True) -> argparse.ArgumentParser:  # fmt: skip
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.set_defaults(run=run)
        if prefix:
            cmd.add_argument("--prefix", default=str(DEFAULT_PREFIX),
                             help="install root (default %(default)s)")  # fmt: skip
        return cmd

    cmd = command("install", _cmd_install, "install the helper (file capabilities or setuid)")
    cmd.add_argument("--mode", choices=("caps", "setuid"), default="caps")
    cmd.add_argument("--group", default=DEFAULT_GROUP, help="who may run it (default %(default)s)")
    cmd.add_argument("--create-group", action="store_true", help="create the group if missing")
    cmd.add_argument("--no-ping-group", dest="ping_group", action="store_false",
                     help="leave net.ipv4.ping_group_range alone (by default the group's gid "
                     "is brought into it, never narrowing it, persisted in /etc/sysctl.d)")
    cmd.add_argument("--sysctl-dir", type=Path, default=SYSCTL_DIR, help=argparse.SUPPRESS)

    cmd = command("remove", _cmd_remove, "undo install, sudoers and python for this prefix")
    cmd.add_argument("--purge", action="store_true", help="delete an edited policy too")

    cmd = command("status", _cmd_status, "report the install; exit 1 when unsafe or broken")
    cmd.add_argument("--json", action="store_true")
    cmd.add_argument("--sudoers-dir", type=Path, default=SUDOERS_DIR, help=argparse.SUPPRESS)

    cmd = command("sudoers", _cmd_sudoers, "let a user or group run the helper via sudo -n")
    who = cmd.add_mutually_exclusive_group(required=True)
    who.add_argument("--user")
    who.add_argument("--group")
    cmd.add_argument("--sudoers-dir", type=Path, default=SUDOERS_DIR, help=argparse.SUPPRESS)

    cmd = command("systemd", _cmd_systemd, "print unit files for a service without root",
                  prefix=False)  # fmt: skip
    cmd.add_argument("--name", default="gprocket-app")
    cmd.add_argument("--user", required=True, help="the unprivileged account (User=)")
    cmd.add_argument("--exec", dest="exec_start", required=True, help="ExecStart= command line")
    cmd.add_argument("--caps", default="cap_net_bind_service,cap_net_raw",
                     help="ambient capabilities (default %(default)s)")  # fmt: skip
    cmd.add_argument("--listen", action="append", default=[],
                     help="[ADDRESS:]PORT/tcp|udp for a .socket unit (repeatable)")  # fmt: skip

    cmd = command("python", _cmd_python, "give a venv interpreter copy permitted-only caps")
    cmd.add_argument("--venv", required=True)
    cmd.add_argument("--caps", default="cap_net_bind_service,cap_net_raw")
    cmd.add_argument("--group", default=DEFAULT_GROUP,
                     help="only this group may run the copy, mode 0750 (default %(default)s)")

    cmd = command("policy", _cmd_policy, "validate the policy file as the helper would")
    cmd.add_argument("--file", help="check this file instead of the installed policy")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run capsetup with ``argv`` (default sys.argv[1:]); return the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        result: int = args.run(args)
    except SetupError as err:
        print(f"capsetup {args.command}: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"capsetup {args.command}: {err}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
