"""The privilege ladder: strategies tried in order, each failure recorded.

Every strategy is an object with a ``name`` and one method,
``acquire(request) -> int``. It raises RungUnavailable when it can never
apply here, RungRefused (or PolicyDenied, or a permission OSError) when it
was tried and refused; the chain records an Attempt and moves on. Any other
kernel error (EADDRINUSE, EADDRNOTAVAIL, ENODEV, ...) would be the same on
every rung, so it stops the ladder as an OSError with its errno. A
HelperError (the helper misbehaved) also stops it: that is a fault to fix,
not a missing privilege.

One module per rung (``inherited``, ``plain``, ``capabilities``, ``broker``,
``helper`` for helper and sudo), named in ``RUNGS``: the one table of names
to factories that ``resolve`` reads. ``caps`` holds the capability sets and
``netns`` the package's one setns(2).

Namespaced requests (``namespace="lab"``): the helper enters
/run/netns/NAME itself, once at start (``--netns NAME``; one broker per
namespace). In-process, only a caller holding CAP_SYS_ADMIN (root) can do
it, on a fresh native thread (``netns``). The capabilities rung does not
enter namespaces (CAP_SYS_ADMIN is far more than the request needs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from .._channel.helper import INSTALL_FIX
from .._environ import trusted_getenv
from .._errors import Attempt, PolicyDenied, PrivilegeError, RungRefused, RungUnavailable
from .._spec import Request
from .broker import BrokerStrategy
from .capabilities import CapabilitiesStrategy
from .helper import HelperStrategy, SudoStrategy
from .plain import PERMISSION_ERRNOS, PlainStrategy

__all__ = [
    "DEFAULT_ORDER",
    "RUNGS",
    "BrokerStrategy",
    "CapabilitiesStrategy",
    "HelperStrategy",
    "PlainStrategy",
    "Strategy",
    "StrategySpec",
    "SudoStrategy",
    "Tally",
    "resolve",
    "run",
]

DEFAULT_ORDER = ("inherited", "plain", "capabilities", "broker", "sudo")
HelperPath = str | os.PathLike[str] | None


@runtime_checkable
class Strategy(Protocol):
    """One rung: ``acquire`` returns a descriptor or raises why it could not."""

    name: str

    def acquire(self, request: Request) -> int: ...


class _Missing:
    """A known strategy whose module is not installed."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def acquire(self, request: Request) -> int:
        raise RungUnavailable(self.reason)


def _inherited(helper: HelperPath) -> Strategy | None:
    try:
        # Lazy: the inherited rung is optional and costs nothing unless named.
        from .inherited import InheritedStrategy  # noqa: PLC0415
    except ImportError:
        return None
    strategy: Strategy = InheritedStrategy()
    return strategy


# Every rung by name (in the order messages list them): its factory gets the
# helper path (``helper=``) and returns None when the rung is not installed.
RUNGS: dict[str, Callable[[HelperPath], Strategy | None]] = {
    "inherited": _inherited,
    "plain": lambda helper: PlainStrategy(),
    "capabilities": lambda helper: CapabilitiesStrategy(),
    "broker": BrokerStrategy,
    "helper": HelperStrategy,
    "sudo": SudoStrategy,
}
# Why a rung that RUNGS names gives None is missing, when it is asked for by name.
_MISSING = {"inherited": "systemd socket activation support is not installed"}

StrategySpec = str | Strategy


def _names(spec: str | Sequence[StrategySpec] | None) -> tuple[tuple[StrategySpec, ...], bool]:
    if spec is None:
        env = trusted_getenv("GPROCKET_STRATEGIES")
        if env is None:
            return DEFAULT_ORDER, True
        spec = env.strip()
    if isinstance(spec, str):
        parts = [part.strip() for part in spec.split(",")]
        if spec.strip() and not all(parts):
            raise ValueError(f"strategies {spec!r} has an empty name")
        spec = [part for part in parts if part]
    if not spec:
        raise ValueError("strategies is empty: name at least one of " + ", ".join(RUNGS))
    return tuple(spec), False


def resolve(
    strategies: str | Sequence[StrategySpec] | None = None,
    helper: HelperPath = None,
) -> list[Strategy]:
    """The strategy objects for ``strategies`` (names, objects, or a comma list).

    None means GPROCKET_STRATEGIES (ignored in a privileged process: see
    _environ), else the default order. Raises
    ValueError for an unknown name.
    """
    specs, default = _names(strategies)
    chain: list[Strategy] = []
    for spec in specs:
        if not isinstance(spec, str):
            if not isinstance(spec, Strategy):
                raise TypeError(
                    "a strategy must be a name or have name and acquire(), "
                    f"not {type(spec).__name__}"
                )
            chain.append(spec)
            continue
        name = spec.lower()
        factory = RUNGS.get(name)
        if factory is None:
            raise ValueError(f"unknown strategy {spec!r}: use one of {', '.join(RUNGS)}")
        strategy = factory(helper)
        if strategy is not None:
            chain.append(strategy)
        elif not default:
            chain.append(_Missing(name, _MISSING.get(name, f"the {name} rung is not installed")))
    return chain


POLICY_FIX = (
    "ask the administrator for a policy entry (docs/POLICY.md); check it with: capsetup status"
)


def _priority(rung: str, fix: str) -> int:
    """Which fix the error names: the most specific to what is installed wins.

    A policy refusal, then what stops an installed helper (group
    membership, no_new_privs), then installing it, then the alternatives
    (capabilities, a sudoers rule).
    """
    if fix == POLICY_FIX:
        return 0
    if rung in ("broker", "helper") and fix != INSTALL_FIX:
        return 1
    if fix == INSTALL_FIX:
        return 2
    return 3


def _best_fix(fixes: list[tuple[int, str]]) -> str:
    return min(fixes, key=lambda item: item[0])[1] if fixes else INSTALL_FIX


class Tally:
    """What a walk of the ladder learnt: each failed attempt and the fixes named.

    Shared by this (gevent) walk and gprocket.aio's, so both explain a
    failure the same way.
    """

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.fixes: list[tuple[int, str]] = []

    def failed(self, rung: str, err: BaseException) -> bool:
        """Record ``err`` from rung ``rung``; False when it must stop the walk instead."""
        if isinstance(err, (RungUnavailable, RungRefused)):
            code = err.errno if isinstance(err, RungRefused) else None
            self.attempts.append(Attempt(rung, err.reason, code))
            if err.fix:
                self.fixes.append((_priority(rung, err.fix), err.fix))
        elif isinstance(err, PolicyDenied):
            reason = err.detail if err.detail.startswith("policy") else f"policy: {err.detail}"
            self.attempts.append(Attempt(rung, reason, err.errno))
            self.fixes.append((0, POLICY_FIX))
        elif isinstance(err, OSError) and err.errno in PERMISSION_ERRNOS:
            self.attempts.append(Attempt(rung, str(err.strerror), err.errno))
        else:
            return False
        return True

    def error(self, request: Request) -> PrivilegeError:
        """The PrivilegeError listing every attempt, with the most specific fix."""
        return PrivilegeError(request.describe(), tuple(self.attempts), _best_fix(self.fixes))


def run(
    request: Request,
    strategies: str | Sequence[StrategySpec] | None = None,
    helper: HelperPath = None,
) -> tuple[int, str, tuple[Attempt, ...]]:
    """Walk the ladder; returns (descriptor, rung name, failed attempts before it).

    Raises PrivilegeError listing every attempt and the fix when no rung
    could serve, OSError for a kernel error no rung would change, and
    HelperError when the helper misbehaved.
    """
    tally = Tally()
    for strategy in resolve(strategies, helper):
        try:
            fd = strategy.acquire(request)
        except (RungUnavailable, RungRefused, PolicyDenied, OSError) as err:
            if not tally.failed(strategy.name, err):
                raise
        else:
            return fd, strategy.name, tuple(tally.attempts)
    raise tally.error(request)
