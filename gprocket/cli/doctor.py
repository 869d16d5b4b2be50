"""``gprocket doctor``: which rung would serve each kind of request, and why not the others.

Exit codes: 0 report printed, 1 the facts could not be read, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys

from gprocket.admin.doctor import KINDS, Diagnosis, Facts, diagnose, gather, notes

__all__ = ["main"]


def _render(facts: Facts, report: tuple[Diagnosis, ...], verbose: bool) -> str:
    lines = [
        f"user {facts.user} (uid {facts.uid}); ladder: {', '.join(facts.strategies)}",
        f"helper: {facts.helper.path if facts.helper else 'none found'}; "
        f"ip_unprivileged_port_start={facts.port_start}; "
        f"ping_group_range={facts.ping_range[0]} {facts.ping_range[1]}",
    ]
    lines.extend(f"note: {note}" for note in notes(facts))
    lines.append("")
    for diagnosis in report:
        served = diagnosis.serves or "NOTHING"
        lines.append(f"{diagnosis.title} [{diagnosis.kind}]: {served}")
        for verdict in diagnosis.verdicts:
            if verdict.serves and verdict.rung != diagnosis.serves and not verbose:
                continue
            mark = "ok " if verdict.serves else "no "
            lines.append(f"  {mark} {verdict.rung:<12} {verdict.reason}")
            if not verdict.serves and verdict.fix and (verbose or diagnosis.serves is None):
                lines.append(f"      {'':<12} fix: {verdict.fix}")
        if diagnosis.fix:
            lines.append(f"  => fix: {diagnosis.fix}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    """Run ``gprocket doctor`` with ``argv`` (the words after ``doctor``)."""
    parser = argparse.ArgumentParser(
        prog="gprocket doctor",
        description="Predict which rung of the privilege ladder would serve each kind of "
        "request for this user, why each other rung would not, and the command that fixes it.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--helper", help="helper path (default: GPROCKET_HELPER, then search)")
    parser.add_argument("--netns", default="gprocket", help="namespace name to check")
    parser.add_argument("--tun", default="gp0", help="TUN/TAP device name to check")
    parser.add_argument("--kind", action="append", choices=[kind.key for kind in KINDS],
                        help="only these kinds (repeatable)")  # fmt: skip
    parser.add_argument("--no-sudo", action="store_true", help="do not ask sudo -n -l")
    parser.add_argument("-v", "--verbose", action="store_true", help="every fix, every rung")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        facts = gather(args.helper, netns=args.netns, tun_name=args.tun, ask_sudo=not args.no_sudo)
    except OSError as err:
        print(f"gprocket doctor: cannot read the facts: {err}", file=sys.stderr)
        return 1
    kinds = tuple(kind for kind in KINDS if not args.kind or kind.key in args.kind)
    report = diagnose(facts, kinds)
    if args.json:
        document = {
            "user": facts.user,
            "uid": facts.uid,
            "strategies": list(facts.strategies),
            "helper": facts.helper.path if facts.helper else None,
            "ip_unprivileged_port_start": facts.port_start,
            "ping_group_range": list(facts.ping_range),
            "notes": list(notes(facts)),
            "kinds": {d.kind: d.to_dict() for d in report},
        }
        print(json.dumps(document, indent=2))
    else:
        print(_render(facts, report, args.verbose), end="")
    return 0
