"""The compiled ICMP engine (gprocket.icmp._speed) and the choice between the two engines."""

from __future__ import annotations

import errno
import importlib
import operator
import os
import socket
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

from gprocket.icmp import _wire as wire
from gprocket.icmp._engine import _SEND_RETRY, Engine, _drive, _flow
from gprocket.icmp._gc import gc_paused
from gprocket.icmp._resolve import host_key
from gprocket.icmp._results import (
    _R_RTT,
    _R_SEQ,
    _R_SIZE,
    _R_SOURCE,
    _R_TTL,
    IcmpError,
    Reply,
    _new,
    _reply,
)
from gprocket.icmp._socket import IcmpSocket
from gprocket.icmp._state import READ, WRITE, YIELD, Counters, Options, State, Wait

_speed: Any
try:
    _speed = importlib.import_module("gprocket.icmp._speed")
except ImportError:  # not built: the Python engine does the same work, slower
    _speed = None

# gpi_step's status and event kinds (gprocket/icmp/_build.py, _loop.h).
_GPI_DONE, _GPI_READ, _GPI_WRITE, _GPI_AGAIN = 0, 1, 2, 3
_EV_REPLY, _EV_DUP, _EV_ERROR, _EV_SENDFAIL, _EV_DONE, _EV_FINAL = 1, 2, 3, 4, 5, 0x100
# The C side's rejection reasons, in its enum's order.
_REASONS = (
    "truncated: shorter than an ICMP header",
    "bad ICMP checksum",
    "not ICMP",
    "malformed IPv4 header",
    "ICMP error quoting something other than an echo request",
    "ICMP type neither echo nor error",
    "echo with a code other than 0",
    "larger than the receive buffer",
)
ENGINE_ENV = "GPROCKET_ICMP_ENGINE"
_RING = 1 << 17
MAX_PROBES = (1 << 31) - 1  # the C engine counts probes in an int


def _fast_wanted() -> bool:
    """Whether to use the compiled engine: yes when built, unless the environment says.

    ``GPROCKET_ICMP_ENGINE=python`` forces the pure-Python engine, ``c``
    insists on the compiled one (RuntimeError when it is not built).
    """
    choice = os.environ.get(ENGINE_ENV, "").strip().lower()
    if choice in ("", "auto"):
        return _speed is not None
    if choice == "python":
        return False
    if choice == "c":
        if _speed is None:
            raise RuntimeError(
                f"{ENGINE_ENV}=c but gprocket.icmp._speed is not built: build it with "
                "`python -m gprocket.icmp._build` (needs cffi and a C compiler)")
        return True
    raise ValueError(f"{ENGINE_ENV} must be 'auto', 'c' or 'python', not {choice!r}")


class _FastEngine:
    """The same engine as Engine with its loop in C (gprocket.icmp._speed).

    Same interface: run() fills each State and calls ``done`` as targets
    complete; ``counters``, ``window`` and ``batch`` mean the same. Each
    gpi_step() call does a bounded slice of sending and receiving and never
    blocks; between calls this waits on the gevent hub. Per-target TTLs
    (traceroute) are the Python engine's job.
    """

    def __init__(self, isock: IcmpSocket, options: Options,
                 done: Callable[[State], None] | None) -> None:
        if _speed is None:
            raise RuntimeError("gprocket.icmp._speed is not built")
        self.isock = isock
        self.family = isock.family
        self.options = options
        self.done = done
        self.ident = isock.ident
        self.counters = Counters()
        self.seq = 0
        self.window, self.batch = _flow(isock, options.size)
        # Probe slots (None: the default, enough for a long sweep's live
        # requests, a few MB at most); when all are live, sending waits.
        self.ring: int | None = None

    def run(self, targets: Sequence[State]) -> None:
        """Ping every target; returns when each has all its answers or timeouts."""
        _drive(self.steps(targets), self.isock.sock.fileno())

    def steps(self, targets: Sequence[State]) -> Generator[Wait, None, None]:
        """The engine without its waits: yields what it waits for next (see Wait)."""
        if not targets:
            return
        ffi, lib = _speed.ffi, _speed.lib
        opts = self.options
        v6 = self.family == socket.AF_INET6
        scopes = ffi.NULL
        if v6:
            pton, inet6 = socket.inet_pton, socket.AF_INET6
            packed = b"".join([t.packed or pton(inet6, str(t.sockaddr[0]).partition("%")[0])
                               for t in targets])
            if any(t.sockaddr[3] for t in targets):
                scopes = ffi.new("uint32_t[]", [int(t.sockaddr[3])  # type: ignore[call-overload]
                                                for t in targets])
        else:
            aton = socket.inet_aton
            packed = b"".join([t.packed or aton(t.address) for t in targets])
        ctx = lib.gpi_new(self.isock.sock.fileno(), self.family,
                          int(self.isock.kind == "raw"), self.ident, opts.size, opts.count,
                          round(opts.interval * 1e9), round(opts.timeout * 1e9),
                          len(targets), packed, scopes, self.seq,
                          self.ring or max(_RING, 4 * len(targets)))
        if ctx == ffi.NULL:
            raise MemoryError(f"no memory for {len(targets)} ICMP targets")
        ctx = ffi.gc(ctx, lib.gpi_free)
        ctx.window, ctx.batch = self.window, self.batch
        step, monotonic_ns = lib.gpi_step, time.monotonic_ns
        on_send = opts.on_send
        seen = [0] * len(targets) if on_send is not None else []
        finished = False
        try:
            while True:
                count = step(ctx)
                if count < 0:
                    raise OSError(errno.EIO, "cannot draw random ICMP payload cookies")
                if on_send is not None:
                    self._sends(ctx, targets, seen, on_send)
                if count:
                    with gc_paused():
                        self._events(ctx, count, targets)
                status = ctx.status
                if status == _GPI_DONE:
                    finished = True
                    break
                if status == _GPI_AGAIN:
                    yield YIELD, 0.0  # a slice is at most ~1 ms: let other greenlets run
                elif status == _GPI_WRITE:
                    yield WRITE, _SEND_RETRY
                else:
                    delay = (ctx.wake_ns - monotonic_ns()) / 1e9
                    if delay > 0:
                        yield READ, delay
        finally:
            self.seq = lib.gpi_seq(ctx)
            self._count(ctx)
            # Stopped early (killed, interrupted): targets not complete yet
            # still show what was sent to them. (A finished run's final
            # events set every target's count already.)
            if not finished:
                sent = ctx.tsent
                for index, state in enumerate(targets):
                    if state.sent < opts.count:
                        state.sent = sent[index]

    @staticmethod
    def _sends(ctx: Any, targets: Sequence[State], seen: list[int],
               on_send: Callable[[str], None]) -> None:
        """on_send for each request the last step sent (the C loop reports none itself)."""
        sent = ctx.tsent
        for index, state in enumerate(targets):
            while seen[index] < sent[index]:
                seen[index] += 1
                on_send(state.name)

    def _count(self, ctx: Any) -> None:
        counters = self.counters
        counters.own_requests = ctx.own_requests
        counters.foreign = ctx.foreign
        counters.rejected = ctx.rejected
        counters.mismatched = ctx.mismatched
        counters.late = ctx.late
        counters.reasons = {reason: ctx.reasons[i] for i, reason in enumerate(_REASONS)
                            if ctx.reasons[i]}

    def _events(self, ctx: Any, count: int, targets: Sequence[State]) -> None:
        """Turn one step's events into Replies, IcmpErrors and finished targets."""
        buffer = _speed.ffi.buffer

        def ints(pointer: Any, width: int = 4) -> list[int]:
            view = memoryview(buffer(pointer, width * count))
            return view.cast("i" if width == 4 else "q").tolist()

        kinds, indexes, seqs = ints(ctx.ev_kind), ints(ctx.ev_target), ints(ctx.ev_seq)
        ttls, values = ints(ctx.ev_ttl), ints(ctx.ev_value, 8)
        opts = self.options
        on_reply, on_error, done = opts.on_reply, opts.on_error, self.done
        size, sent = 8 + opts.size, opts.count
        new, set_seq, set_source, set_ttl, set_rtt, set_size = (
            _new, _R_SEQ, _R_SOURCE, _R_TTL, _R_RTT, _R_SIZE)
        for i, flagged in enumerate(kinds):
            state = targets[indexes[i]]
            final = flagged & _EV_FINAL
            kind = flagged & ~_EV_FINAL
            if kind == _EV_REPLY:
                # _reply() inlined: this branch runs once per answered target.
                ttl = ttls[i]
                reply: Reply = new(Reply)
                set_seq(reply, seqs[i])
                set_source(reply, state.address)
                set_ttl(reply, None if ttl < 0 else ttl)
                set_rtt(reply, values[i] / 1e6)
                set_size(reply, size)
                state.replies.append(reply)
                if on_reply is not None:
                    on_reply(state.name, reply, False)
            elif kind == _EV_DONE:
                state.sent = values[i]
                if done is not None:
                    done(state)
            elif kind == _EV_DUP:
                state.duplicates += 1
                if on_reply is not None:
                    ttl = ttls[i]
                    on_reply(state.name, _reply(seqs[i], state.address,
                                                None if ttl < 0 else ttl, values[i] / 1e6,
                                                size), True)
            elif kind == _EV_ERROR:
                self._error(state, ctx, i, seqs[i], values[i])
            elif kind == _EV_SENDFAIL:
                err = values[i]
                name = errno.errorcode.get(err, str(err))
                error = IcmpError(seqs[i], None, None, None,
                                  f"sendto: {os.strerror(err)} ({name})", err)
                state.errors.append(error)
                if on_error is not None:
                    on_error(state.name, error)
            if final:
                # This event ended the target's last request: it is complete.
                state.sent = sent
                if done is not None:
                    done(state)

    def _error(self, state: State, ctx: Any, i: int, seq: int, rtt_ns: int) -> None:
        family = ctx.ev_family[i]
        raw = bytes(_speed.ffi.buffer(ctx.ev_addr + 16 * i, 16))
        reporter: str | None = None
        if family == socket.AF_INET:
            reporter = socket.inet_ntoa(raw[:4])
        elif family == socket.AF_INET6:
            reporter = host_key((socket.inet_ntop(socket.AF_INET6, raw), 0, 0,
                                 ctx.ev_scope[i]))
        kind, code = ctx.ev_type[i], ctx.ev_code[i]
        error = IcmpError(seq, reporter, kind, code, wire.describe(self.family, kind, code),
                          None, rtt_ns / 1e6)
        state.errors.append(error)
        if self.options.on_error is not None:
            self.options.on_error(state.name, error)


_TTL_OF = operator.attrgetter("ttl")


def choose_engine(isock: IcmpSocket, options: Options, done: Callable[[State], None] | None,
                  states: Sequence[State]) -> Engine | _FastEngine:
    """The compiled engine when built (and wanted), else the Python one."""
    # Per-target TTLs (1..255, else None) are the Python engine's job; the
    # check runs in C (map, attrgetter): it looks at every target of a sweep.
    if _fast_wanted() and len(states) * options.count <= MAX_PROBES and \
            not any(map(_TTL_OF, states)):
        return _FastEngine(isock, options, done)
    return Engine(isock, options, done)
