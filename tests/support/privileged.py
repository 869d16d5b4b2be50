"""Real unprivileged processes, network namespaces and installed helpers.

Every unprivileged behaviour in the suite is shown by a process that really
runs as another uid (setpriv), optionally inside a network namespace made for
the test, optionally against a helper really installed setuid or with file
capabilities in a root-owned temporary prefix. Nothing here mocks the kernel.
"""

from __future__ import annotations

import contextlib
import grp
import importlib.util
import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# The interpreter running the tests also runs the unprivileged side, so both
# import the same gprocket; it must sit where other users can run it
# (scripts/setup.sh makes /opt/gprocket/venv).
VENV_PYTHON = os.environ.get("GPROCKET_TEST_PYTHON") or sys.executable
TEST_GROUP = "gprocket"
UNPRIV_USER = "gprocket-test"
OTHER_USER = "gprocket-other"
# Root-owned and not writable by others, as the helper demands of the
# directories above its policy; /tmp (world-writable) would be refused.
INSTALL_ROOT = Path("/opt/gprocket/t")
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _readable_by_others(path: Path) -> bool:
    """Whether a user with no special rights can read `path` (every parent searchable)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        needed = stat.S_IROTH if parent == path else stat.S_IXOTH
        if not mode & needed:
            return False
    return True


def _examples_dir() -> Path:
    """examples/ where the unprivileged test users can read it.

    A CI clone may sit under /root (mode 0700): then the examples are copied
    once per run into the root-owned, world-readable install root.
    """
    source = REPO / "examples"
    if _readable_by_others(source / "echo.py"):
        return source
    target = INSTALL_ROOT / f"examples-{os.getpid()}"
    if not target.exists():
        INSTALL_ROOT.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, target)
        for path in [INSTALL_ROOT.parent, INSTALL_ROOT, target, *target.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    return target


EXAMPLES = _examples_dir()


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    @property
    def groups(self) -> tuple[int, ...]:
        return tuple(os.getgrouplist(self.name, self.gid))


def package_dir() -> Path:
    """The directory of the gprocket package the tests exercise."""
    spec = importlib.util.find_spec("gprocket")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return REPO / "gprocket"


def python_path() -> str:
    """PYTHONPATH that makes the same gprocket (and capsetup) importable."""
    return str(package_dir().parent)


def packaged_helper() -> Path:
    return package_dir() / "_bin" / "gprocket-helper"


def file_caps() -> str:
    """The helper's file capability set, from the one place it is defined."""
    text = (REPO / "helper" / "Makefile").read_text()
    match = re.search(r"^FILE_CAPS\s*[:?]?=\s*(.+)$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError("helper/Makefile does not define FILE_CAPS")
    return match.group(1).strip()


def ensure_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", name], check=True)
        return grp.getgrnam(name).gr_gid


def ensure_user(name: str, groups: Sequence[str] = ()) -> User:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        argv = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                "--user-group"]
        if groups:
            argv += ["-G", ",".join(groups)]
        subprocess.run([*argv, name], check=True)
        entry = pwd.getpwnam(name)
    for group in groups:
        if name not in grp.getgrnam(group).gr_mem:
            subprocess.run(["usermod", "-a", "-G", group, name], check=True)
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid)


def user_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": SAFE_PATH, "PYTHONPATH": python_path(), "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1"}
    for key, value in os.environ.items():
        if key.startswith("GPROCKET_") and key != "GPROCKET_TEST_PYTHON":
            env.setdefault(key, value)
    env.update(extra or {})
    return env


def as_user_argv(user: User, argv: Sequence[str], *, netns: Netns | None = None,
                 ambient_caps: Sequence[str] = ()) -> list[str]:
    """argv that runs `argv` as `user` (and inside `netns`), nothing else kept."""
    prefix: list[str] = []
    if netns is not None:
        prefix = ["ip", "netns", "exec", netns.name]
    caps = ",".join(f"+{cap.lower().removeprefix('cap_')}" for cap in ambient_caps)
    setpriv = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups"]
    if caps:
        setpriv += [f"--inh-caps={caps}", f"--ambient-caps={caps}"]
    else:
        setpriv += ["--inh-caps=-all"]
    return [*prefix, *setpriv, "--", *argv]


def run_argv(user: User, argv: Sequence[str], *, netns: Netns | None = None,
             ambient_caps: Sequence[str] = (), env: dict[str, str] | None = None,
             timeout: float = 60, input: str | None = None,
             cwd: str | None = "/") -> subprocess.CompletedProcess[str]:
    """Run any program as `user`; output captured as text."""
    return subprocess.run(
        as_user_argv(user, argv, netns=netns, ambient_caps=ambient_caps),
        env=user_env(env), capture_output=True, text=True, timeout=timeout,
        input=input, cwd=cwd, check=False,
    )


def popen_argv(user: User, argv: Sequence[str], *, netns: Netns | None = None,
               ambient_caps: Sequence[str] = (), env: dict[str, str] | None = None,
               **kwargs: Any) -> subprocess.Popen[str]:
    """Start any program as `user` in the background (stdout/stderr piped)."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("cwd", "/")
    return subprocess.Popen(
        as_user_argv(user, argv, netns=netns, ambient_caps=ambient_caps),
        env=user_env(env), text=True, **kwargs,
    )


def run_python(user: User, code: str, *, netns: Netns | None = None,
               ambient_caps: Sequence[str] = (), env: dict[str, str] | None = None,
               python: str | None = None, timeout: float = 60,
               ) -> subprocess.CompletedProcess[str]:
    """Run Python source `code` as `user` with gprocket importable."""
    return run_argv(user, [python or VENV_PYTHON, "-c", code], netns=netns,
                    ambient_caps=ambient_caps, env=env, timeout=timeout)


def run_json(user: User, code: str, **kwargs: Any) -> Any:
    """Run `code` as `user`; it must succeed and print one JSON document last."""
    proc = run_python(user, code, **kwargs)
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"no output\n--- stderr\n{proc.stderr}"
    return json.loads(lines[-1])


# The start of a program run as another user that reports outcomes as JSON:
# code(errno) spells an errno by name, failure(err) describes an exception with
# every ladder rung's errno (refused_with reads it).
OUTCOME_PRELUDE = """
import errno, json

def code(number):
    return errno.errorcode.get(number) if number else None

def failure(err):
    return {"error": type(err).__name__, "errno": code(getattr(err, "errno", None)),
            "attempts": [[a.rung, code(a.errno)] for a in getattr(err, "attempts", ())],
            "message": str(err)}
"""


def refused_with(outcome: dict[str, Any], name: str) -> bool:
    """The call failed and the kernel's or the helper's errno was `name`."""
    errnos = {outcome.get("errno")} | {err for _, err in outcome.get("attempts", [])}
    return "error" in outcome and name in errnos


@dataclass
class Netns:
    """A network namespace made for one test, deleted after it."""

    name: str

    @property
    def path(self) -> Path:
        return Path("/run/netns") / self.name

    def exec(self, argv: Sequence[str], *, check: bool = True, timeout: float = 60,
             **kwargs: Any) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("capture_output", True)
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], check=check,
                              text=True, timeout=timeout, **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(["ip", "netns", "exec", self.name, *argv], text=True,
                                **kwargs)

    def sysctl(self, key: str, value: str) -> None:
        self.exec(["sysctl", "-q", "-w", f"{key}={value}"])


@contextlib.contextmanager
def make_netns(prefix: str = "gpt") -> Iterator[Netns]:
    ns = Netns(f"{prefix}-{secrets.token_hex(4)}")
    subprocess.run(["ip", "netns", "add", ns.name], check=True)
    try:
        ns.exec(["ip", "link", "set", "lo", "up"])
        # Deterministic starting point whatever the distribution's defaults:
        # no ICMP datagram sockets, no unprivileged low ports.
        ns.sysctl("net.ipv4.ping_group_range", "1 0")
        ns.sysctl("net.ipv4.ip_unprivileged_port_start", "1024")
        yield ns
    finally:
        # Processes still inside would keep the namespace alive unseen.
        pids = subprocess.run(["ip", "netns", "pids", ns.name], capture_output=True,
                              text=True, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", ns.name], check=False)


def install_root() -> Path:
    """INSTALL_ROOT, made root-owned 0755 like every directory the helper checks."""
    INSTALL_ROOT.mkdir(parents=True, exist_ok=True)
    for directory in (INSTALL_ROOT.parent, INSTALL_ROOT):
        os.chown(directory, 0, 0)
        os.chmod(directory, 0o755)
    return INSTALL_ROOT


def capsetup_argv(*args: str, host: bool = True) -> list[str]:
    """The capsetup command line; an install on the host never opens its ping range.

    ``capsetup install`` brings the helper's group into net.ipv4.ping_group_range
    and persists it in /etc/sysctl.d: a test that wants that runs capsetup in a
    network namespace of its own (``host=False``) with --sysctl-dir pointing
    at a temporary directory; an install on the host gets --no-ping-group.
    """
    argv = list(args)
    if host and argv[:1] == ["install"] and "--no-ping-group" not in argv:
        argv.append("--no-ping-group")
    return [VENV_PYTHON, "-m", "capsetup", *argv]


def capsetup_env() -> dict[str, str]:
    return {"PATH": SAFE_PATH, "PYTHONPATH": python_path(), "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1"}


def run_capsetup(*args: str, timeout: float = 60,
                 netns: Netns | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real capsetup command as root (inside ``netns`` if given).

    Inside a namespace an install must name --sysctl-dir (or --no-ping-group).
    """
    safe = "--sysctl-dir" in args or "--no-ping-group" in args
    if netns is not None and args[:1] == ("install",) and not safe:
        raise ValueError("an install in a test names --sysctl-dir: never /etc/sysctl.d")
    prefix = ["ip", "netns", "exec", netns.name] if netns is not None else []
    argv = capsetup_argv(*args, host=netns is None)
    return subprocess.run([*prefix, *argv], capture_output=True,
                          text=True, env=capsetup_env(), timeout=timeout, check=False)


@contextlib.contextmanager
def install_helper(mode: str = "caps", policy: str | None = None,
                   group: str = TEST_GROUP, source: Path | None = None) -> Iterator[Path]:
    """Install the packaged helper (or `source`) in a fresh root-only prefix.

    `mode` "setuid" or "caps" as capsetup installs it; "plain" with neither,
    for tests that run a build as root: the helper refuses a policy directory
    with a group- or other-writable parent, so no test runs a helper from
    the checkout (which may sit under /tmp) or its build/ directory.
    """
    if mode not in ("caps", "setuid", "plain"):
        raise ValueError(f"mode must be 'caps', 'setuid' or 'plain', not {mode!r}")
    source = source or packaged_helper()
    if not source.is_file():
        raise FileNotFoundError(f"helper not built: {source} (run: make -C helper)")
    gid = ensure_group(group)
    prefix = install_root() / secrets.token_hex(6)
    target_dir = prefix / "libexec" / "gprocket"
    target_dir.mkdir(parents=True, mode=0o755)
    for directory in (prefix, prefix / "libexec", target_dir):
        os.chmod(directory, 0o755)
    target = target_dir / "gprocket-helper"
    try:
        shutil.copyfile(source, target)
        os.chown(target, 0, gid)
        if mode == "setuid":
            os.chmod(target, 0o750 | stat.S_ISUID)
        elif mode == "plain":
            os.chmod(target, 0o750)
        else:
            os.chmod(target, 0o750)
            subprocess.run(["setcap", file_caps(), str(target)], check=True)
        if policy is not None:
            policy_file = target_dir / "policy"
            policy_file.write_text(policy)
            os.chmod(policy_file, 0o644)
        yield target
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


@contextlib.contextmanager
def caps_python(caps: str = "cap_net_bind_service,cap_net_raw+p") -> Iterator[str]:
    """A copy of the interpreter with file capabilities (permitted only)."""
    prefix = install_root() / secrets.token_hex(6)
    (prefix / "bin").mkdir(parents=True, mode=0o755)
    os.chmod(prefix, 0o755)
    real = Path(os.path.realpath(VENV_PYTHON))
    copy = prefix / "bin" / "python3"
    try:
        shutil.copyfile(real, copy)
        os.chmod(copy, 0o755)
        # A copy outside the venv would lose its site-packages: make it a venv.
        venv_cfg = Path(VENV_PYTHON).parent.parent / "pyvenv.cfg"
        (prefix / "pyvenv.cfg").write_text(venv_cfg.read_text())
        site = next((Path(VENV_PYTHON).parent.parent / "lib").glob("python3*/site-packages"))
        lib = prefix / "lib" / site.parent.name
        lib.mkdir(parents=True)
        (lib / "site-packages").symlink_to(site)
        for path in (prefix / "lib", lib):
            os.chmod(path, 0o755)
        subprocess.run(["setcap", caps, str(copy)], check=True)
        yield str(copy)
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def open_fds(pid: int) -> list[str]:
    """What each descriptor of `pid` points at (readlink of /proc/PID/fd/*)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    result = []
    for entry in sorted(fd_dir.iterdir(), key=lambda p: int(p.name)):
        with contextlib.suppress(FileNotFoundError):
            result.append(f"{entry.name} -> {os.readlink(entry)}")
    return result


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(x) for x in path.read_text().split()]
    except FileNotFoundError:
        return []


def json_line(proc: subprocess.Popen[str], cmd: dict[str, Any]) -> dict[str, Any]:
    """Send `cmd` as one JSON line to a driver process, read its one-line JSON answer."""
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps(cmd) + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    assert line, f"driver died: {proc.stderr.read() if proc.stderr else ''}"
    result: dict[str, Any] = json.loads(line)
    return result


def stop(proc: subprocess.Popen[str]) -> None:
    """Kill (if still running) and reap a background process, closing its pipes."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait(timeout=20)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream:
            stream.close()


@dataclass(frozen=True)
class Gate:
    """A helper that waits, before it execs, until a gate file appears."""

    wrapper: Path
    path: Path

    @property
    def env(self) -> dict[str, str]:
        """What the caller's script reads: SLOW_HELPER to use, HELPER_GATE to open."""
        return {"SLOW_HELPER": str(self.wrapper), "HELPER_GATE": str(self.path)}


GATE_SECONDS = 30
GATE_OPENS_AT = 20
# For asyncio scripts run as the user: a task counting loop turns (one per
# 5 ms) that opens the gate on turn GATE_OPENS_AT. Needs asyncio and os.
ASYNC_GATE_TICKER = f"""
async def gate_ticker(state):
    while True:
        await asyncio.sleep(0.005)
        state["ticks"] += 1
        if state["ticks"] == {GATE_OPENS_AT}:
            open(os.environ["HELPER_GATE"], "a").close()
"""


def gate_script(gate: Path, helper: Path) -> str:
    """A shell script that execs ``helper`` once ``gate`` exists (see gated_wrapper)."""
    tries = GATE_SECONDS * 100
    return ("#!/bin/sh\n"
            "tries=0\n"
            f"while [ ! -e {gate} ]; do\n"
            "  tries=$((tries + 1))\n"
            f"  if [ $tries -gt {tries} ]; then\n"
            f"    echo 'gated-helper: {gate} stayed shut {GATE_SECONDS} s: the calling "
            "event loop stopped turning' >&2\n"
            "    exit 70\n"
            "  fi\n"
            "  sleep 0.01\n"
            "done\n"
            f'exec {helper} "$@"\n')


def gated_wrapper(helper: Path, user: User) -> Gate:
    """A helper that starts only once ``user``'s script opens the gate.

    The script's event loop opens it (creates the file) after so many turns,
    so the helper answers only a loop that kept turning while it waited: a
    front that blocked its loop on the helper never opens it, and the helper
    gives up after GATE_SECONDS with a message naming the cause. No clock
    is involved, so no host stall can fail or pass the test by chance.

    The wrapper is a script beside the helper (root-owned, in its root-only
    prefix), marked with file capabilities so that the library's check lets
    it run: the kernel ignores a script's capabilities, the helper it execs
    has its own. The gate lies in a directory of ``user``'s in the helper's
    prefix; both go with the prefix.
    """
    prefix = helper.parents[2]
    gates = prefix / "gate"
    gates.mkdir(mode=0o700, exist_ok=True)
    os.chown(gates, user.uid, user.gid)
    gate = gates / "open"
    wrapper = helper.parent / "gated-helper"
    wrapper.write_text(gate_script(gate, helper))
    info = helper.stat()
    os.chown(wrapper, 0, info.st_gid)
    os.chmod(wrapper, 0o750)
    subprocess.run(["setcap", "cap_net_raw+p", str(wrapper)], check=True)
    return Gate(wrapper, gate)
