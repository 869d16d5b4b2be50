"""fdpass.Poll's rule alone: runs as any user (the receives that feed it
are in tests/privileged/test_broker_fdpass.py)."""

from __future__ import annotations

from gprocket._channel import fdpass


def test_poll_backs_off_when_polls_give_up_and_resumes_when_one_pays() -> None:
    """The client's half of "Polling only while it pays" (docs/ARCHITECTURE.md):
    each poll that gives up doubles the number of receives that then wait at
    once (up to 1024); one poll that finds its reply ends the suspension."""
    poll = fdpass.Poll(50e-6)
    windows = []
    for _ in range(40):
        window = poll.next_window()
        windows.append(window)
        if window:
            poll.record(fdpass._GAVE_UP)
    # Polls at receives 0, 2, 5, 10, 19, 36: suspensions of 1, 2, 4, 8, 16.
    assert [i for i, w in enumerate(windows) if w] == [0, 2, 5, 10, 19, 36]
    for _ in range(20):
        poll.record(fdpass._GAVE_UP)
    assert poll.backoff == 1024
    poll.skip = 0
    poll.record(fdpass._POLLED)
    assert (poll.skip, poll.backoff, poll.next_window()) == (0, 0, 50e-6)
    # Found at the first try (already queued): says nothing either way.
    poll.record(fdpass._GAVE_UP)
    poll.record(fdpass._AT_ONCE)
    assert (poll.skip, poll.backoff) == (1, 1)
    assert fdpass.Poll(0.0).next_window() == 0.0
