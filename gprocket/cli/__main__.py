"""`gprocket` dispatcher: each subcommand lives in its own module.

Subcommand modules are imported only when chosen, so `gprocket ping` never
pays for the packet layer and a broken optional piece cannot break the rest.
Exit codes: 0 ok, 1 failure, 2 usage error.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("gprocket.cli.demo", "bind a low port, ping, capture: which rung served each"),
    "doctor": ("gprocket.cli.doctor", "which rung would serve each kind of request, and why"),
    "ping": ("gprocket.cli.ping", "ICMP/ICMPv6 echo, like iputils ping (--many: like fping)"),
    "sniff": ("gprocket.cli.sniff", "capture frames, like tcpdump (-w FILE.pcap)"),
    "run": ("gprocket.cli.run", "run an unmodified Python program with privileged binds"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: gprocket COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "gprocket COMMAND --help for a command's options"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"gprocket: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
