"""`gprocket run`: run an unmodified Python program with privileged binds.

    gprocket run [--strategies LIST] [--helper PATH] [--gevent] -m MODULE [ARGS...]
    gprocket run [OPTIONS] SCRIPT [ARGS...]
    gprocket run [OPTIONS] -c CODE [ARGS...]
    gprocket run [OPTIONS] -- python3 [PYTHON-OPTIONS] (-m MODULE | SCRIPT | -c CODE) [ARGS...]

Everything from -m, -c, the script or '--' on belongs to the program, so its
own options never reach this parser. Exit status: the program's; 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import os
import sys

from .._environ import ignored
from .._runner import Program, UsageError, parse_python_argv, run_program

__all__ = ["main"]

_VALUED = ("--strategies", "--helper")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gprocket run",
        description="Run an unmodified Python program; binds to privileged ports and raw "
                    "or packet sockets it is refused get their descriptor through the "
                    "gprocket privilege ladder.",
        epilog="program: -m MODULE [ARGS] | -c CODE [ARGS] | SCRIPT [ARGS] | "
               "-- python3 [-u] (-m MODULE | -c CODE | SCRIPT) [ARGS]",
    )
    parser.add_argument("--strategies", metavar="LIST",
                        help="comma list of rungs to try, e.g. inherited,plain,broker "
                             "(sets GPROCKET_STRATEGIES for the program)")
    parser.add_argument("--helper", metavar="PATH",
                        help="the gprocket-helper to use (sets GPROCKET_HELPER)")
    parser.add_argument("--gevent", action="store_true",
                        help="call gevent.monkey.patch_all() before the program starts")
    return parser


def split(argv: list[str]) -> tuple[list[str], Program | None]:
    """Split `argv` into our own options and the program (None: none given).

    Raises UsageError when the program part is malformed.
    """
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            return argv[:index], parse_python_argv(argv[index + 1:], interpreter=True)
        if arg.startswith(("-m", "-c")):
            return argv[:index], parse_python_argv(argv[index:])
        if not arg.startswith("-") or arg == "-":
            return argv[:index], parse_python_argv(["--", *argv[index:]])
        index += 2 if arg in _VALUED else 1
    return argv, None


def main(argv: list[str]) -> int:
    """Run `gprocket run ARGV`; return the program's exit status (2: usage error)."""
    parser = _parser()
    try:
        ours, program = split(argv)
    except UsageError as err:
        print(f"gprocket run: {err}", file=sys.stderr)
        return 2
    try:
        options = parser.parse_args(ours)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    if program is None:
        parser.print_usage(sys.stderr)
        print("gprocket run: no program given: use -m MODULE, -c CODE or SCRIPT",
              file=sys.stderr)
        return 2
    if options.strategies:
        os.environ["GPROCKET_STRATEGIES"] = options.strategies
    if options.helper:
        os.environ["GPROCKET_HELPER"] = options.helper
    for line in ignored():
        print(f"gprocket run: {line}", file=sys.stderr)
    return run_program(program, gevent_patch_all=options.gevent)
