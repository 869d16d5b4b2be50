"""The cost of one privileged descriptor, rung by rung, from one run.

Each variant opens udp/53 on 127.0.0.1 and closes it, many times; the median
and p99 per descriptor are printed side by side with ratios:

  plain              in-process bind as root (the floor)
  capabilities       a native thread with an empty effective set raising
                     CAP_NET_BIND_SERVICE around socket/bind (python-prctl)
  broker             one persistent gprocket-helper --broker, gevent client
  broker floor (gevent)    anchor: a bare send + recvmsg to the same broker on
                     a gevent socket: nothing encoded, decoded or checked,
                     and no polling (the requester parks in the hub at once)
  broker floor (blocking)  anchor: the same round trip with blocking calls
  helper (gevent)    one-shot helper per descriptor: posix_spawn + pidfd, gevent
  helper (blocking)  anchor: the same helper by blocking posix_spawn/recvmsg/waitpid
  gevent.subprocess  anchor: the helper started by gevent.subprocess.Popen
  sudo               the helper through sudo -n (as root, no rule needed)
  ..., no sandbox    the broker and the one-shot again, with a helper built
                     without seccomp, Landlock and rlimits (make -C helper
                     nosandbox; installed only here): what the sandbox costs

Every variant of a worker is measured in interleaved rounds (the order
rotated each round), so a machine that gets busier or quieter during the
run moves every variant alike; each row also shows the spread of its
per-round medians. With ``--hog N`` every round is measured twice, quiet
and with N busy processes running (bench/_hog.py; started by each worker,
paused for the quiet pass, which comes first, killed at the end), and the loaded
figures are printed beside the quiet ones. The targets of issue 3 are printed next to our figures
with a verdict. Then 1,000 greenlets acquire concurrently through one broker: total time,
all succeed, and no descriptor is leaked in either process. The helper runs
setuid root from a root-owned temporary prefix, and every helper variant
runs in an unprivileged worker process (user "nobody"), as a real client
would; plain and capabilities run as root. Needs root.

    /opt/gprocket/venv/bin/python bench/acquire.py [--scale 1.0] [--hog 1]
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

import _hog

ROOT = Path(__file__).resolve().parents[1]
HELPER = ROOT / "gprocket" / "_bin" / "gprocket-helper"
BARE_HELPER = ROOT / "helper" / "build" / "gprocket-helper-nosandbox"
INSTALL_ROOT = Path("/opt/gprocket/t")
# The default rule, and raw ICMP for the 1,000 concurrent opens (no port to share).
POLICY = "allow * bind any 1-1023\nallow * raw icmp\n"
LOADED = " +hog"  # the loaded twin of a variant, in the workers' results


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


def interleaved(variants: dict[str, tuple[Callable[[], None], int]], rounds: int,
                warmup: int = 20, hogs: _hog.Hogs | None = None) -> dict[str, list[list[float]]]:
    """Per variant, one list of samples per round: each round takes a block
    of every variant (``count // rounds`` samples), in an order rotated from
    round to round, so that a machine that gets busier slows every variant
    alike instead of whichever ran last. With ``hogs``, all the rounds are run
    quiet, then all again loaded, the loaded blocks kept under the variant's
    name + LOADED. Not quiet and loaded round by round: when the hogs stop,
    the scheduler leaves client and broker on the one CPU it gave them under
    load for 30-60 ms (1,000-2,000 requests at ~31 µs, measured by sampling
    /proc/PID/stat), so every quiet round would start with that transition."""
    phases = hogs.phases if hogs is not None else (_hog.QUIET,)
    samples: dict[str, list[list[float]]] = {
        name + ("" if phase == _hog.QUIET else LOADED): []
        for phase in phases for name in variants}
    names = list(variants)
    for phase in phases:
        if hogs is not None:
            hogs.phase(phase)
        suffix = "" if phase == _hog.QUIET else LOADED
        for work, _ in variants.values():
            timed(work, 0, warmup)
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                work, count = variants[name]
                samples[name + suffix].append(timed(work, max(1, count // rounds), warmup=0))
    if hogs is not None:
        hogs.pause()
    return samples


def summarize_rounds(rounds: list[list[float]]) -> dict[str, float]:
    """Median and p99 over every sample, and the spread of the round medians."""
    result = summary([value for block in rounds for value in block])
    medians = [statistics.median(block) * 1e6 for block in rounds]
    result["round_min"], result["round_max"] = min(medians), max(medians)
    return result


def bench_root(scale: float, hogs: _hog.Hogs) -> dict[str, dict[str, float]]:
    import _prctl

    from gprocket._ladder import CapabilitiesStrategy, PlainStrategy
    from gprocket._ladder.caps import drop_effective, read_sets
    from gprocket._spec import SocketRequest

    request = SocketRequest(53, protocol="udp", ip="127.0.0.1")
    plain, caps = PlainStrategy(), CapabilitiesStrategy()
    permitted = read_sets().permitted
    everything = [cap for cap in range(_prctl.CAP_LAST_CAP + 1) if permitted >> cap & 1]
    holder: dict[str, dict[str, list[list[float]]]] = {}

    def root_block() -> None:
        os.close(plain.acquire(request))

    def caps_block() -> None:
        os.close(caps.acquire(request))

    def on_thread() -> None:
        # Capabilities are per thread: this thread alternates between root
        # with every capability effective (plain) and root with an empty
        # effective set (capabilities rung), in blocks.
        phases = hogs.phases
        samples: dict[str, list[list[float]]] = {
            name + ("" if phase == _hog.QUIET else LOADED): []
            for phase in phases for name in ("plain", "capabilities")}
        count, rounds = int(40000 * scale), 40
        for index in range(rounds):
            blocks = [("plain", root_block), ("capabilities", caps_block)]
            for phase in phases[index % len(phases):] + phases[:index % len(phases)]:
                hogs.phase(phase)
                suffix = "" if phase == _hog.QUIET else LOADED
                for name, work in blocks[index % 2:] + blocks[:index % 2]:
                    if name == "plain":
                        _prctl.set_caps(everything, [], [], [], [], [])
                    else:
                        drop_effective()
                    samples[name + suffix].append(timed(work, max(1, count // rounds),
                                                        warmup=5))
        hogs.pause()
        drop_effective()
        holder["samples"] = samples

    thread = threading.Thread(target=on_thread)
    thread.start()
    thread.join()
    return {name: summarize_rounds(rounds) for name, rounds in holder["samples"].items()}


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
    """Anchor: the same broker round trip with nothing of gprocket in the way.

    One send and one recvmsg per descriptor, nothing encoded, decoded,
    checked or timed out: on a gevent socket (the least a cooperative client
    can pay on this machine) or, with ``blocking``, on a plain one (the
    least any client can pay).
    """

    def __init__(self, helper: str, message: bytes, blocking: bool) -> None:
        import gevent.socket

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid = os.posix_spawn(helper, [helper, "--broker"], {},
                                  file_actions=[(os.POSIX_SPAWN_DUP2, theirs.fileno(), 0)])
        theirs.close()
        self.channel: socket.socket = (
            ours if blocking else gevent.socket.socket(fileno=ours.detach())
        )
        self.message = message

    def round_trip(self) -> None:
        self.channel.send(self.message)
        _, anc, _, _ = self.channel.recvmsg(96, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC)
        os.close(int.from_bytes(anc[0][2][:4], sys.byteorder))

    def close(self) -> None:
        self.channel.close()
        os.waitpid(self.pid, 0)


def bench_subprocess(helper: str, scale: float, hogs: _hog.Hogs) -> dict[str, object]:
    """gevent.subprocess in its own process: its SIGCHLD watcher reaps every
    child of the process it runs in, which would tax the other variants."""
    import gevent

    from gprocket._channel.wire import encode_request
    from gprocket._spec import SocketRequest

    gevent.sleep(0)
    message = encode_request(SocketRequest(53, protocol="udp", ip="127.0.0.1"), 1)
    work = lambda: subprocess_one_shot(helper, message)  # noqa: E731
    return {name: summarize_rounds(blocks) for name, blocks in interleaved(
        {"gevent.subprocess": (work, int(400 * scale))}, rounds=10, warmup=5,
        hogs=hogs).items()}


def checkpoint(pid: int | None) -> None:
    """Let the root driver count the broker's descriptors (we may not read them)."""
    print(json.dumps({"checkpoint": pid}), flush=True)
    sys.stdin.readline()


def bench_user(helper: str, bare: str, scale: float, hogs: _hog.Hogs) -> dict[str, object]:
    import gevent

    from gprocket._channel.wire import encode_request
    from gprocket._ladder.broker import Broker
    from gprocket._ladder.helper import one_shot
    from gprocket._spec import SocketRequest

    gevent.sleep(0)
    # The same work for every variant (a udp socket bound to a low port on
    # 127.0.0.1), but each on a port of its own: a broker sends a descriptor
    # a moment before it closes its own copy, so a port just handed over may
    # still be held for a few microseconds by the helper that sent it.
    def udp(port: int) -> tuple[SocketRequest, bytes]:
        request = SocketRequest(port, protocol="udp", ip="127.0.0.1")
        return request, encode_request(request, 1)

    request = udp(53)[0]
    results: dict[str, object] = {}

    broker = Broker(helper)
    bare_broker = Broker(bare)
    floors = [FloorBroker(helper, udp(153)[1], blocking=False),
              FloorBroker(helper, udp(253)[1], blocking=True)]
    oneshot_request = udp(353)[0]
    blocking_message = udp(453)[1]
    bare_request, bare_oneshot_request = udp(553)[0], udp(653)[0]
    # Every user-side variant in the same rounds: the microsecond ones and
    # the process-per-descriptor ones alternate, so a change of load during
    # the run reaches them all.
    rounds = interleaved(
        {
            "broker": (lambda: os.close(broker.request(request)), int(40000 * scale)),
            "broker floor (gevent)": (floors[0].round_trip, int(40000 * scale)),
            "broker floor (blocking)": (floors[1].round_trip, int(40000 * scale)),
            "helper (gevent)": (lambda: os.close(one_shot(helper, oneshot_request)),
                                int(1000 * scale)),
            "helper (blocking)": (lambda: blocking_one_shot(helper, blocking_message),
                                  int(1000 * scale)),
            "broker, no sandbox": (lambda: os.close(bare_broker.request(bare_request)),
                                   int(40000 * scale)),
            "helper (gevent), no sandbox": (
                lambda: os.close(one_shot(bare, bare_oneshot_request)), int(1000 * scale)),
        },
        rounds=20,
        hogs=hogs,
    )
    for floor in floors:
        floor.close()
    bare_broker.close()
    for name, blocks in rounds.items():
        results[name] = summarize_rounds(blocks)

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


def bench_sudo(helper: str, scale: float, hogs: _hog.Hogs) -> dict[str, object]:
    import gevent

    from gprocket._ladder.helper import one_shot
    from gprocket._spec import SocketRequest

    gevent.sleep(0)
    request = SocketRequest(53, protocol="udp", ip="127.0.0.1")
    work = lambda: os.close(one_shot(helper, request, sudo=True))  # noqa: E731
    return {name: summarize_rounds(blocks) for name, blocks in interleaved(
        {"sudo": (work, int(100 * scale))}, rounds=10, warmup=3, hogs=hogs).items()}


# ---------------------------------------------------------------- driver


def install_setuid_copy() -> Path:
    """The helper setuid in a fresh prefix, and beside it (libexec/bare/) the build
    without a sandbox, for the comparison."""
    prefix = INSTALL_ROOT / f"bench-{secrets.token_hex(4)}"
    for source, name in ((HELPER, "gprocket"), (BARE_HELPER, "bare")):
        target = prefix / "libexec" / name / "gprocket-helper"
        target.parent.mkdir(parents=True)
        for directory in (INSTALL_ROOT, prefix, prefix / "libexec", target.parent):
            os.chmod(directory, 0o755)  # noqa: S103 - root-owned, readable: as an install
        shutil.copyfile(source, target)
        os.chmod(target, 0o4755)  # noqa: S103 - the setuid install being measured
        # The defaults grant no raw socket; the concurrent run opens raw ICMP.
        policy = target.parent / "policy"
        policy.write_text(POLICY)
        os.chmod(policy, 0o644)
    return prefix


def run_worker(mode: str, helper: str, scale: float, user: str | None,
               netns: str, *, hog: int) -> dict[str, object]:
    bare = helper.replace("/libexec/gprocket/", "/libexec/bare/")
    argv = [sys.executable, __file__, "--worker", mode, "--helper", helper, "--bare", bare,
            "--scale", str(scale), "--hog", str(hog)]
    if user is not None:
        entry = pwd.getpwnam(user)
        argv = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups",
                "--inh-caps=-all", "--", *argv]
    # A namespace of our own: nobody else's test can hold port 53 there.
    argv = ["ip", "netns", "exec", netns, *argv]
    # The installed gprocket (its compiled receive included), never the checkout.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
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
    parser.add_argument("--bare", help=argparse.SUPPRESS)
    _hog.add_argument(parser)
    args = parser.parse_args()
    workers = {"root": lambda hogs: bench_root(args.scale, hogs),
               "user": lambda hogs: bench_user(args.helper, args.bare, args.scale, hogs),
               "subprocess": lambda hogs: bench_subprocess(args.helper, args.scale, hogs),
               "sudo": lambda hogs: bench_sudo(args.helper, args.scale, hogs)}
    if args.worker is not None:
        with _hog.Hogs(args.hog) as hogs:
            print(json.dumps(workers[args.worker](hogs)))
        return 0
    if os.geteuid() != 0:
        print("bench/acquire.py needs root (it installs a setuid helper copy)", file=sys.stderr)
        return 2
    subprocess.run(["make", "-C", str(ROOT / "helper"), "all", "nosandbox"], check=True,
                   capture_output=True)
    prefix = install_setuid_copy()
    helper = str(prefix / "libexec" / "gprocket" / "gprocket-helper")
    netns = f"gpcore-bench-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"], check=True)
        results: dict[str, object] = {}
        results.update(run_worker("root", helper, args.scale, None, netns, hog=args.hog))
        user = run_worker("user", helper, args.scale, "nobody", netns, hog=args.hog)
        concurrent = user.pop("concurrent")
        results.update(user)
        results.update(run_worker("subprocess", helper, args.scale, "nobody", netns, hog=args.hog))
        results.update(run_worker("sudo", helper, args.scale, None, netns, hog=args.hog))
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(prefix, ignore_errors=True)
    report(results, concurrent, args.hog)  # type: ignore[arg-type]
    return 0


def report(results: dict[str, dict[str, float]], concurrent: dict[str, object],
           hog: int) -> None:
    oneshot = results["helper (gevent)"]["median"]
    plain = results["plain"]["median"]
    head = (f"{'variant':<29}{'median µs':>11}{'p99 µs':>10}{'round medians µs':>20}{'n':>7}"
            f"{'÷ plain':>9}{'÷ one-shot':>11}")
    if hog:
        head += f" |{f'with {hog} hog: median':>22}{'p99 µs':>10}{'round medians µs':>20}"
    print(head)
    for name, row in results.items():
        if name.endswith(LOADED):
            continue
        spread = f"{row['round_min']:.1f}-{row['round_max']:.1f}"
        line = (f"{name:<29}{row['median']:>11.1f}{row['p99']:>10.1f}{spread:>20}"
                f"{row['n']:>7.0f}{row['median'] / plain:>9.2f}{row['median'] / oneshot:>11.3f}")
        loaded = results.get(name + LOADED)
        if loaded is not None:
            spread = f"{loaded['round_min']:.1f}-{loaded['round_max']:.1f}"
            line += f" |{loaded['median']:>22.1f}{loaded['p99']:>10.1f}{spread:>20}"
        print(line)
    broker = results["broker"]["median"]
    floor = results["broker floor (gevent)"]["median"]
    blocking_floor = results["broker floor (blocking)"]["median"]
    blocking = results["helper (blocking)"]["median"]
    caps = results["capabilities"]["median"]
    print()
    print("what the sandbox costs (set up once per helper start; then the seccomp filter runs "
          "on every system call, Landlock on every open):")
    for label, name in (("broker", "broker"), ("one-shot", "helper (gevent)")):
        with_it, without = results[name]["median"], results[f"{name}, no sandbox"]["median"]
        print(f"  {label:<9} median {with_it:8.1f} µs sandboxed, {without:8.1f} µs without: "
              f"{with_it - without:+.1f} µs ({with_it / without:.2f}x)")
    print()
    print(f"broker ÷ its gevent floor {broker / floor:.2f}, ÷ its blocking floor "
          f"{broker / blocking_floor:.2f} (the floors neither encode nor check, and park at "
          f"once; gprocket first polls up to 50 µs for the reply while polling pays)")
    print(f"1,000 concurrent greenlets through one broker: {concurrent['total_ms']:.1f} ms total, "
          f"{concurrent['ok']}/1000 succeeded, client descriptors before/after "
          f"{concurrent['client_fds'][0]}/{concurrent['client_fds'][1]}, "  # type: ignore[index]
          f"broker descriptors before/after "
          f"{concurrent['broker_fds'][0]}/{concurrent['broker_fds'][1]}, "  # type: ignore[index]
          f"same broker process: {concurrent['same_broker']}")
    leak_free = (concurrent["ok"] == 1000
                 and len(set(concurrent["client_fds"])) == 1  # type: ignore[arg-type]
                 and len(set(concurrent["broker_fds"])) == 1)  # type: ignore[arg-type]
    checks = [
        ("broker median", "<= 25 µs", f"{broker:.1f} µs", broker <= 25),
        ("broker ÷ its gevent floor", "<= 1.0", f"{broker / floor:.2f}", broker <= floor),
        ("one-shot ÷ broker", ">= 20", f"{oneshot / broker:.1f}", oneshot / broker >= 20),
        ("one-shot (gevent) ÷ blocking posix_spawn", "<= 1.2", f"{oneshot / blocking:.2f}",
         oneshot <= 1.2 * blocking),
        ("capabilities ÷ plain root", "<= 2", f"{caps / plain:.2f}", caps <= 2 * plain),
        ("1,000 concurrent: all succeed, no leak", "yes", "yes" if leak_free else "no",
         leak_free),
    ]
    if hog:
        loaded = results["broker" + LOADED]["median"]
        loaded_floor = results["broker floor (blocking)" + LOADED]["median"]
        checks.append((f"with {hog} hog: broker ÷ blocking floor", "<= 1.25",
                       f"{loaded / loaded_floor:.2f}", loaded <= 1.25 * loaded_floor))
    print()
    print(f"  {'issue 3 and 15 targets':<42}{'wanted':>10}{'ours':>12}  verdict")
    for text, wanted, ours, ok in checks:
        print(f"  {text:<42}{wanted:>10}{ours:>12}  {'ok' if ok else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
