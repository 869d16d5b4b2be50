"""Exceptions shared by every part of gprocket.

Whose fault an error is decides its class: bad arguments are ValueError or
TypeError (raised by ``_spec`` before anything runs), a kernel refusal that no
rung could change is a plain OSError with its errno, a request nobody was
allowed to serve is PrivilegeError, and a helper that misbehaved is
HelperError.
"""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass

__all__ = [
    "Attempt",
    "GprocketError",
    "HelperError",
    "PolicyDenied",
    "PrivilegeError",
    "RungRefused",
    "RungUnavailable",
]


@dataclass(frozen=True)
class Attempt:
    """One rung the ladder tried: its name, why it failed, the errno if any."""

    rung: str
    reason: str
    errno: int | None = None

    def __str__(self) -> str:
        if self.errno is None:
            return f"{self.rung}: {self.reason}"
        name = _errno.errorcode.get(self.errno, str(self.errno))
        return f"{self.rung}: {self.reason} ({name})"


class GprocketError(Exception):
    """Base class of every gprocket-specific error."""


class PrivilegeError(GprocketError, PermissionError):
    """No rung of the ladder could provide the descriptor.

    ``attempts`` lists each rung tried and why it failed; ``fix`` is one line
    saying what would make the request work.
    """

    def __init__(self, what: str, attempts: tuple[Attempt, ...], fix: str) -> None:
        lines = [f"cannot open {what}: no rung of the privilege ladder could provide it"]
        lines.extend(f"  {attempt}" for attempt in attempts)
        lines.append(f"fix: {fix}")
        super().__init__(_errno.EPERM, "\n".join(lines))
        self.what = what
        self.attempts = attempts
        self.fix = fix

    def __str__(self) -> str:
        return str(self.strerror)


class PolicyDenied(GprocketError, PermissionError):
    """The helper's policy file does not grant this request to the caller."""

    def __init__(self, err: int, detail: str) -> None:
        super().__init__(err, f"the helper's policy refuses this request: {detail}")
        self.detail = detail

    def __str__(self) -> str:
        return str(self.strerror)


class HelperError(GprocketError):
    """The helper misbehaved: it died, timed out, or broke the protocol."""


class RungUnavailable(GprocketError):
    """This rung can never apply here (nothing installed, no capability)."""

    def __init__(self, reason: str, fix: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


class RungRefused(GprocketError):
    """This rung was tried and the kernel or the helper said no."""

    def __init__(self, reason: str, err: int | None, fix: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errno = err
        self.fix = fix
