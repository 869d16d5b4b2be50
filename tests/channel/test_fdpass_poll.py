"""fdpass.Poll's rule alone: runs as any user (the receives that feed it
are in tests/privileged/test_broker_fdpass.py)."""

from __future__ import annotations

import pytest

from gprocket._channel import fdpass


def test_poll_backs_off_when_polls_lose_the_cpu_and_resumes_when_one_pays() -> None:
    """The client's half of "Polling only while it pays" (docs/ARCHITECTURE.md):
    each poll that loses its CPU doubles the number of receives that then
    wait at once (up to 1024); one poll that finds its reply ends the suspension."""
    poll = fdpass.Poll(50e-6)
    windows = []
    for _ in range(40):
        window = poll.next_window()
        windows.append(window)
        if window:
            poll.record(fdpass._LOST_CPU)
    # Polls at receives 0, 2, 5, 10, 19, 36: suspensions of 1, 2, 4, 8, 16.
    assert [i for i, w in enumerate(windows) if w] == [0, 2, 5, 10, 19, 36]
    for _ in range(20):
        poll.record(fdpass._LOST_CPU)
    assert poll.backoff == 1024
    poll.skip = 0
    poll.record(fdpass._POLLED)
    assert (poll.skip, poll.backoff, poll.next_window()) == (0, 0, 50e-6)
    # Found at the first try (already queued): says nothing either way.
    poll.record(fdpass._LOST_CPU)
    poll.record(fdpass._AT_ONCE)
    assert (poll.skip, poll.backoff) == (1, 1)
    assert fdpass.Poll(0.0).next_window() == 0.0


@pytest.mark.parametrize(("elsewhere", "spare"),
                         [(True, True), (False, True), (True, False), (False, False)])
def test_a_poll_that_outlasts_its_window_backs_off_unless_the_peer_had_a_cpu(
        elsewhere: bool, spare: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A window that passed with the peer on another CPU and CPUs to spare met a
    slow or sleeping peer: the next receive waits and polling resumes after
    it, whatever came before. With the peer on this CPU (waiting for the poll
    to end) or more tasks running than CPUs it counts as a lost poll. (What
    the kernel says of both is tests/privileged/test_broker_fdpass.py's.)"""
    monkeypatch.setattr(fdpass, "_peer_elsewhere", lambda peer: elsewhere)
    monkeypatch.setattr(fdpass, "_cpus_to_spare", lambda: spare)
    poll = fdpass.Poll(50e-6, peer=1)
    poll.record(fdpass._LOST_CPU)
    poll.record(fdpass._LOST_CPU)
    assert (poll.skip, poll.backoff) == (2, 2)
    poll.skip = 0
    poll.record(fdpass._EXPIRED)
    if elsewhere and spare:
        assert (poll.skip, poll.backoff) == (1, 2)
        assert [poll.next_window(), poll.next_window()] == [0.0, 50e-6]
    else:
        assert (poll.skip, poll.backoff) == (4, 4)
