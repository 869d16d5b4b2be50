"""A network namespace of a bench's own, for the part of the bench that runs inside it.

bench/ping.py and bench/aio.py run their measurements in a fresh namespace
(their targets and sysctls touch nothing of the host's), in a second process
of the same script started with ``--inside``, which prints its results as JSON.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Sequence
from typing import Any


def run_inside(prefix: str, setup: Sequence[Sequence[str]], argv: Sequence[str]) -> Any:
    """Make namespace ``prefix``-xxxxxx, run each ``setup`` command in it, then
    ``argv`` in it with the installed gprocket (PYTHONPATH dropped: never the
    checkout). Returns the JSON on the last line ``argv`` printed, or None
    (having shown its output) when it failed. The namespace is deleted on
    every path."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for command in setup:
            subprocess.run(["ip", "netns", "exec", name, *command], check=True,
                           capture_output=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        proc = subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True,
                              text=True, env=env, check=False)
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return None
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
