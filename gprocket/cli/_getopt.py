"""Option parsing shared by the iputils- and fping-shaped commands: glibc getopt's words."""

from __future__ import annotations

import getopt
import sys
from collections.abc import Sequence


class Exit(Exception):
    """Stop with this exit code (whatever had to be said is printed already)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def parse(argv: Sequence[str], short: str, long: Sequence[str], *, prog: str, after: str,
          code: int) -> tuple[list[tuple[str, str]], list[str]]:
    """getopt.gnu_getopt (options may follow operands, as with glibc's getopt).

    A bad option is reported as glibc's getopt words it ("PROG: invalid option
    -- 'z'"), followed by ``after``; then Exit(``code``) is raised.
    """
    try:
        return getopt.gnu_getopt(list(argv), short, list(long))
    except getopt.GetoptError as err:
        option = (err.opt or "?").lstrip("-")
        if "requires argument" in err.msg:
            text = f"option requires an argument -- '{option}'"
        elif len(option) > 1:
            text = f"unrecognized option '--{option}'"
        else:
            text = f"invalid option -- '{option}'"
        print(f"{prog}: {text}\n{after}", end="", file=sys.stderr)
        raise Exit(code) from None
