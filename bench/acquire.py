"""The cost of one privileged descriptor, rung by rung, from one run.

Each variant opens udp/53 on 127.0.0.1 and closes it, many times; the median
and p99 per descriptor are printed side by side with ratios:

  plain              in-process bind as root (the floor)
  capabilities       a native thread with an empty effective set raising
                     CAP_NET_BIND_SERVICE around socket/bind (python-prctl)
  broker             one persistent gprocket-helper --broker, gevent client
  helper (gevent)    one-shot helper per descriptor: posix_spawn + pidfd, gevent
  helper (blocking)  anchor: the same helper by blocking posix_spawn/recvmsg/waitpid
  gevent.subprocess  anchor: the helper started by gevent.subprocess.Popen
  sudo               the helper through sudo -n (as root, no rule needed)

then 1,000 greenlets acquire concurrently through one broker: total time,
all succeed, and no descriptor is leaked in either process. The helper runs
setuid root from a root-owned temporary prefix, and every helper variant
runs in an unprivileged worker process (user "nobody"), as a real client
would; plain and capabilities run as root. Needs root.

    PYTHONPATH=. python bench/acquire.py [--scale 1.0]
"""

from __future__ import annotations

import argparse
import array
import json
import os
import pwd
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HELPER = ROOT / "gprocket" / "_bin" / "gprocket-helper"
INSTALL_ROOT = Path("/opt/gprocket/t")


def timed(work: Callable[[], None], count: int, warmup: int = 20) -> list[float]:
    """Seconds per call of `work`, `count` samples after a warm-up."""
    for _ in range(warmup):
        work()
    samples = []
    clock = time.perf_counter
    for _ in range(count):
        start = clock()
        work()
        samples.append(clock() - start)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median": statistics.median(ordered) * 1e6,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6,
        "n": len(ordered),
    }


def fd_count(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---------------------------------------------------------------- root side


def interleaved(variants: dict[str, Callable[[], None]], count: int, rounds: int,
                warmup: int = 20) -> dict[str, list[float]]:
    """Samples per variant, taken in alternating blocks so that a busy
    machine slows every variant alike instead of whichever ran last."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for work in variants.values():
        timed(work, 0, warmup)
    for _ in range(rounds):
        for name, work in variants.items():
            samples[name].extend(timed(work, max(1, count // rounds), warmup=0))
    return samples


def bench_root(scale: float) -> dict[str, dict[str, float]]:
    import _prctl

    from gprocket._caps import drop_effective, read_sets
    from gprocket._ladder import CapabilitiesStrategy, PlainStrategy
    from gprocket._spec import SocketRequest

    request = SocketRequest(53, protocol="udp", ip="127.0.0.1")
    plain, caps = PlainStrategy(), CapabilitiesStrategy()
    permitted = read_sets().permitted
    everything = [cap for cap in range(_prctl.CAP_LAST_CAP + 1) if permitted >> cap & 1]
    holder: dict[str, dict[str, list[float]]] = {}

    def root_block() -> None:
        os.close(plain.acquire(request))

    def caps_block() -> None:
        os.close(caps.acquire(request))

    def on_thread() -> None:
        # Capabilities are per thread: this thread alternates between root
        # with every capability effective (plain) and root with an empty
        # effective set (capabilities rung), in blocks.
        samples: dict[str, list[float]] = {"plain": [], "capabilities": []}
        count, rounds = int(20000 * scale), 20
        for _ in range(rounds):
            _prctl.set_caps(everything, [], [], [], [], [])
            samples["plain"].extend(timed(root_block, count // rounds, warmup=5))
            drop_effective()
            samples["capabilities"].extend(timed(caps_block, count // rounds, warmup=5))
        holder["samples"] = samples

    thread = threading.Thread(target=on_thread)
    thread.start()
    thread.join()
    return {name: summary(values) for name, values in holder["samples"].items()}


# ---------------------------------------------------------------- user side


def blocking_one_shot(helper: str, message: bytes) -> None:
    """Anchor: posix_spawn and plain blocking calls, no gevent at all."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    actions = [(os.POSIX_SPAWN_DUP2, theirs.fileno(), 0)]
    pid = os.posix_spawn(helper, [helper], {}, file_actions=actions)
    theirs.close()
    ours.send(message)
    _, anc, _, _ = ours.recvmsg(96, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC)
    fds = array.array("i")
    fds.frombytes(anc[0][2])
    os.close(fds[0])
    ours.close()
    os.waitpid(pid, 0)


def subprocess_one_shot(helper: str, message: bytes) -> None:
    """Anchor: what a gevent program would write with gevent.subprocess."""
    import gevent.socket
    import gevent.subprocess

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = gevent.subprocess.Popen([helper], stdin=theirs.fileno(), close_fds=True)
    theirs.close()
    channel = gevent.socket.socket(fileno=ours.detach())
    channel.send(message)
    _, anc, _, _ = channel.recvmsg(96, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC)
    fds = array.array("i")
    fds.frombytes(anc[0][2])
    os.close(fds[0])
    channel.close()
    proc.wait()


class FloorBroker:
    """Anchor: the same broker round trip with nothing but gevent in the way.

    A reader greenlet hands each raw reply to an AsyncResult, as gprocket's
    broker client does, but nothing is encoded, decoded, checked or timed
    out: the least a cooperative client can pay on this machine.
    """

    def __init__(self, helper: str, message: bytes) -> None:
        import gevent
        import gevent.socket

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid = os.posix_spawn(helper, [helper, "--broker"], {},
                                  file_actions=[(os.POSIX_SPAWN_DUP2, theirs.fileno(), 0)])
        theirs.close()
        self.channel = gevent.socket.socket(fileno=ours.detach())
        self.message = message
        self.waiter: Any = None
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            _, anc, _, _ = self.channel.recvmsg(96, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC)
            self.waiter.set(int.from_bytes(anc[0][2][:4], "little"))

    def round_trip(self) -> None:
        from gevent.event import AsyncResult

        self.waiter = AsyncResult()
        self.channel.sendall(self.message)
        os.close(self.waiter.get())

    def close(self) -> None:
        self.reader.kill()
        self.channel.close()
        os.waitpid(self.pid, 0)


def bench_subprocess(helper: str, scale: float) -> dict[str, float]:
    """gevent.subprocess in its own process: its SIGCHLD watcher reaps every
    child of the process it runs in, which would tax the other variants."""
    import gevent

    from gprocket._spec import SocketRequest
    from gprocket._wire import encode_request

    gevent.sleep(0)
    message = encode_request(SocketRequest(53, protocol="udp", ip="127.0.0.1"), 1)
    return summary(timed(lambda: subprocess_one_shot(helper, message), int(300 * scale), warmup=5))


def checkpoint(pid: int | None) -> None:
    """Let the root driver count the broker's descriptors (we may not read them)."""
    print(json.dumps({"checkpoint": pid}), flush=True)
    sys.stdin.readline()


def bench_user(helper: str, scale: float) -> dict[str, object]:
    import gevent

    from gprocket._broker import Broker
    from gprocket._helper import one_shot
    from gprocket._spec import SocketRequest
    from gprocket._wire import encode_request

    gevent.sleep(0)
    request = SocketRequest(53, protocol="udp", ip="127.0.0.1")
    message = encode_request(request, 1)
    results: dict[str, object] = {}

    broker = Broker(helper)
    floor = FloorBroker(helper, message)
    fast = interleaved(
        {
            "broker": lambda: os.close(broker.request(request)),
            "gevent floor": floor.round_trip,
        },
        int(20000 * scale),
        rounds=10,
    )
    floor.close()
    slow = interleaved(
        {
            "helper (gevent)": lambda: os.close(one_shot(helper, request)),
            "helper (blocking)": lambda: blocking_one_shot(helper, message),
        },
        int(400 * scale),
        rounds=10,
        warmup=5,
    )
    for name, values in {**fast, **slow}.items():
        results[name] = summary(values)

    # 1,000 greenlets through one broker at once (raw ICMP: no port to share).
    icmp = SocketRequest(protocol="icmp")
    os.close(broker.request(icmp))
    assert broker.pid is not None
    before = (fd_count(), broker.pid)
    checkpoint(broker.pid)

    def one() -> bool:
        fd = broker.request(icmp)
        os.close(fd)
        return True

    start = time.perf_counter()
    jobs = [gevent.spawn(one) for _ in range(1000)]
    gevent.joinall(jobs)
    total = time.perf_counter() - start
    checkpoint(broker.pid)
    results["concurrent"] = {
        "total_ms": total * 1e3,
        "ok": sum(1 for job in jobs if job.value is True),
        "client_fds": [before[0], fd_count()],
        "broker_pid": broker.pid,
        "same_broker": broker.pid == before[1],
    }
    broker.close()
    return results


def bench_sudo(helper: str, scale: float) -> dict[str, float]:
    import gevent

    from gprocket._helper import one_shot
    from gprocket._spec import SocketRequest

    gevent.sleep(0)
    request = SocketRequest(53, protocol="udp", ip="127.0.0.1")
    return summary(timed(lambda: os.close(one_shot(helper, request, sudo=True)), int(60 * scale),
                         warmup=3))


# ---------------------------------------------------------------- driver


def install_setuid_copy() -> Path:
    prefix = INSTALL_ROOT / f"bench-{secrets.token_hex(4)}"
    target = prefix / "libexec" / "gprocket" / "gprocket-helper"
    target.parent.mkdir(parents=True)
    for directory in (INSTALL_ROOT, prefix, prefix / "libexec", target.parent):
        os.chmod(directory, 0o755)  # noqa: S103 - root-owned, readable: as an install
    shutil.copyfile(HELPER, target)
    os.chmod(target, 0o4755)  # noqa: S103 - the setuid install being measured
    return prefix


def run_worker(mode: str, helper: str, scale: float, user: str | None,
               netns: str) -> dict[str, object]:
    argv = [sys.executable, __file__, "--worker", mode, "--helper", helper, "--scale", str(scale)]
    if user is not None:
        entry = pwd.getpwnam(user)
        argv = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups",
                "--inh-caps=-all", "--", *argv]
    # A namespace of our own: nobody else's test can hold port 53 there.
    argv = ["ip", "netns", "exec", netns, *argv]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd="/")
    assert proc.stdin is not None and proc.stdout is not None
    broker_fds = []
    for line in proc.stdout:
        doc = json.loads(line)
        if "checkpoint" not in doc:
            break
        broker_fds.append(fd_count(doc["checkpoint"]))
        proc.stdin.write("\n")
        proc.stdin.flush()
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"worker {mode} failed:\n{err}")
    result: dict[str, object] = doc
    if broker_fds:
        result["concurrent"]["broker_fds"] = broker_fds  # type: ignore[index]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every sample count")
    parser.add_argument("--worker", choices=["root", "user", "subprocess", "sudo"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--helper", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "root":
        print(json.dumps(bench_root(args.scale)))
        return 0
    if args.worker == "user":
        print(json.dumps(bench_user(args.helper, args.scale)))
        return 0
    if args.worker == "subprocess":
        print(json.dumps(bench_subprocess(args.helper, args.scale)))
        return 0
    if args.worker == "sudo":
        print(json.dumps(bench_sudo(args.helper, args.scale)))
        return 0
    if os.geteuid() != 0:
        print("bench/acquire.py needs root (it installs a setuid helper copy)", file=sys.stderr)
        return 2
    if not HELPER.exists():
        subprocess.run(["make", "-C", str(ROOT / "helper")], check=True, capture_output=True)
    prefix = install_setuid_copy()
    helper = str(prefix / "libexec" / "gprocket" / "gprocket-helper")
    netns = f"gpcore-bench-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"], check=True)
        results: dict[str, object] = {}
        results.update(run_worker("root", helper, args.scale, None, netns))
        user = run_worker("user", helper, args.scale, "nobody", netns)
        concurrent = user.pop("concurrent")
        results.update(user)
        results["gevent.subprocess"] = run_worker("subprocess", helper, args.scale, "nobody", netns)
        results["sudo"] = run_worker("sudo", helper, args.scale, None, netns)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(prefix, ignore_errors=True)
    report(results, concurrent)  # type: ignore[arg-type]
    return 0


def report(results: dict[str, dict[str, float]], concurrent: dict[str, object]) -> None:
    oneshot = results["helper (gevent)"]["median"]
    plain = results["plain"]["median"]
    print(f"{'variant':<20}{'median µs':>12}{'p99 µs':>12}{'n':>8}"
          f"{'÷ plain':>10}{'÷ one-shot':>12}")
    for name, row in results.items():
        print(f"{name:<20}{row['median']:>12.1f}{row['p99']:>12.1f}{row['n']:>8.0f}"
              f"{row['median'] / plain:>10.2f}{row['median'] / oneshot:>12.3f}")
    broker = results["broker"]["median"]
    print()
    print(f"1,000 concurrent greenlets through one broker: {concurrent['total_ms']:.1f} ms total, "
          f"{concurrent['ok']}/1000 succeeded, client descriptors before/after "
          f"{concurrent['client_fds'][0]}/{concurrent['client_fds'][1]}, "  # type: ignore[index]
          f"broker descriptors before/after "
          f"{concurrent['broker_fds'][0]}/{concurrent['broker_fds'][1]}, "  # type: ignore[index]
          f"same broker process: {concurrent['same_broker']}")
    checks = [
        ("broker median <= 25 µs", broker <= 25),
        ("broker >= 20x cheaper than one-shot", oneshot / broker >= 20),
        ("one-shot under gevent <= 1.2x blocking posix_spawn",
         oneshot <= 1.2 * results["helper (blocking)"]["median"]),
        ("capabilities rung <= 2x plain root", results["capabilities"]["median"] <= 2 * plain),
        ("all 1,000 concurrent succeeded, no descriptor leaked in either process",
         concurrent["ok"] == 1000
         and len(set(concurrent["client_fds"])) == 1  # type: ignore[arg-type]
         and len(set(concurrent["broker_fds"])) == 1),  # type: ignore[arg-type]
    ]
    print()
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISSED'}] {text}")


if __name__ == "__main__":
    sys.exit(main())
