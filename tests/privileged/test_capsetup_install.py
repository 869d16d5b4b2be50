"""capsetup install/status/remove for real: root-owned temporary prefixes, real users.

Every prefix lives under /opt/gprocket/t (root-owned 0755 chain, as the
helper demands); each test removes what it installed.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged


capsetup = priv.run_capsetup


@pytest.fixture
def prefix(unpriv_user: priv.User) -> Iterator[Path]:
    """A prefix that does not exist yet; capsetup creates it, the fixture cleans up."""
    path = priv.install_root() / f"cs-{secrets.token_hex(5)}"
    try:
        yield path
    finally:
        capsetup("remove", "--purge", "--prefix", str(path))
        shutil.rmtree(path, ignore_errors=True)


def helper_of(prefix: Path) -> Path:
    return prefix / "libexec" / "gprocket" / "gprocket-helper"


def getcap(path: Path) -> str:
    """getcap's text for path ('' when none), e.g. 'cap_net_raw=p'."""
    out = subprocess.run(["getcap", str(path)], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    return out.split(None, 1)[1] if out else ""


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every file's identity, metadata, content hash and capabilities under root."""
    result: dict[str, tuple[object, ...]] = {}
    for path in sorted([root, *root.rglob("*")]):
        st = os.lstat(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        caps = getcap(path) if path.is_file() else ""
        result[str(path)] = (st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                             digest, caps)  # fmt: skip
    return result


OPEN_CODE = """
import json, gprocket
out = {}
for key, kw in (("udp53", dict(port=53, protocol="udp", family="inet6", ip="::1")),
                ("ping", dict(port=0, protocol="icmp", type="dgram", family="inet")),
                ("icmp6", dict(port=0, protocol="icmp6", family="inet6"))):
    try:
        sock = gprocket.open(helper=HELPER, **kw)
        out[key] = sock.rung
        sock.close()
    except gprocket.PrivilegeError as err:
        out[key] = "PrivilegeError: " + str(err)
print(json.dumps(out))
"""


@pytest.mark.parametrize("mode", ["caps", "setuid"])
def test_install_lets_group_member_open_port_53_and_ping_but_no_raw_socket(  # noqa: PLR0917
    mode: str,
    prefix: Path,
    unpriv_user: priv.User,
    other_user: priv.User,
    netns: priv.Netns,
    tmp_path: Path,
) -> None:
    # Issue 12, finding 2: the defaults grant no raw socket; ICMP echo for the
    # group goes through ping sockets that install opened (in this namespace).
    done = capsetup("install", "--mode", mode, "--prefix", str(prefix), "--sysctl-dir",
                    str(tmp_path), netns=netns)  # fmt: skip
    assert done.returncode == 0, done.stderr
    helper = helper_of(prefix)
    assert f"installed helper {helper}" in done.stdout
    assert f"wrote default policy {helper.parent / 'policy'}" in done.stdout
    st = os.stat(helper)
    assert (st.st_uid, grp.getgrgid(st.st_gid).gr_name) == (0, "gprocket")
    want_mode = 0o4750 if mode == "setuid" else 0o750
    assert stat.S_IMODE(st.st_mode) == want_mode
    if mode == "caps":
        assert getcap(helper) == priv.file_caps().replace("+p", "=p")
    else:
        assert getcap(helper) == ""
    code = OPEN_CODE.replace("HELPER", repr(str(helper)))
    member = priv.run_json(unpriv_user, code, netns=netns)
    assert member["udp53"] == "broker" and member["ping"] == "plain", member
    assert member["icmp6"].startswith("PrivilegeError"), member
    assert "policy" in member["icmp6"]
    outsider = priv.run_json(other_user, code, netns=netns)
    for key in ("udp53", "ping", "icmp6"):
        assert outsider[key].startswith("PrivilegeError"), outsider
    assert "join group gprocket" in outsider["udp53"], outsider["udp53"]
    removed = capsetup("remove", "--prefix", str(prefix), netns=netns)
    assert "restored net.ipv4.ping_group_range to 1 0" in removed.stdout, removed.stdout


def test_install_twice_changes_nothing(prefix: Path) -> None:
    first = capsetup("install", "--prefix", str(prefix))
    assert first.returncode == 0, first.stderr
    before = snapshot(prefix)
    second = capsetup("install", "--prefix", str(prefix))
    assert second.returncode == 0, second.stderr
    assert second.stdout == "nothing to change\n"
    assert snapshot(prefix) == before


def test_switching_mode_says_exactly_what_changed(prefix: Path) -> None:
    assert capsetup("install", "--prefix", str(prefix)).returncode == 0
    done = capsetup("install", "--mode", "setuid", "--prefix", str(prefix))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        f"replaced helper {helper_of(prefix)}: mode 0750 -> 4750; capabilities "
        f"{priv.file_caps().replace('+p', '=p')} -> none"
    )
    assert getcap(helper_of(prefix)) == ""
    assert stat.S_IMODE(os.stat(helper_of(prefix)).st_mode) == 0o4750


def test_remove_leaves_nothing_behind(prefix: Path) -> None:
    assert capsetup("install", "--prefix", str(prefix)).returncode == 0
    done = capsetup("remove", "--prefix", str(prefix))
    assert done.returncode == 0, done.stderr
    assert f"removed helper {helper_of(prefix)}" in done.stdout
    assert f"removed directory {prefix}" in done.stdout
    assert not prefix.exists()
    again = capsetup("remove", "--prefix", str(prefix))
    assert again.stdout == "nothing to change\n"


def test_remove_keeps_an_edited_policy_unless_purged(prefix: Path) -> None:
    assert capsetup("install", "--prefix", str(prefix)).returncode == 0
    policy = prefix / "libexec" / "gprocket" / "policy"
    policy.write_text("allow group:gprocket packet\n")
    kept = capsetup("remove", "--prefix", str(prefix))
    assert f"kept edited policy {policy}" in kept.stdout
    assert policy.read_text() == "allow group:gprocket packet\n"
    assert not helper_of(prefix).exists()
    purged = capsetup("remove", "--purge", "--prefix", str(prefix))
    assert f"removed policy {policy}" in purged.stdout
    assert not prefix.exists()


def _ls_l(path: Path) -> tuple[str, str, str]:
    fields = subprocess.run(["ls", "-l", str(path)], capture_output=True, text=True,
                            check=True).stdout.split()  # fmt: skip
    return fields[0], fields[2], fields[3]


@pytest.mark.parametrize("mode", ["caps", "setuid"])
def test_status_reports_what_ls_getcap_and_the_helper_say(mode: str, prefix: Path) -> None:
    assert capsetup("install", "--mode", mode, "--prefix", str(prefix)).returncode == 0
    done = capsetup("status", "--json", "--prefix", str(prefix))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    helper = helper_of(prefix)
    perms, owner, group = _ls_l(helper)
    assert (report["helper"]["owner"], report["helper"]["group"]) == (owner, group)
    assert perms == ("-rwsr-x---" if mode == "setuid" else "-rwxr-x---")
    assert report["helper"]["mode"] == ("4750" if mode == "setuid" else "0750")
    assert report["helper"]["setuid"] is (mode == "setuid")
    assert (report["helper"]["caps"] or "") == getcap(helper)
    check = subprocess.run([str(helper), "--check-policy"], capture_output=True, text=True,
                           check=False)  # fmt: skip
    assert check.returncode == 0
    assert report["policy"]["valid"] is True
    assert report["policy"]["check_output"] == (check.stdout + check.stderr).strip()
    assert report["ok"] is True and report["problems"] == []


def test_status_flags_a_group_writable_helper(prefix: Path) -> None:
    assert capsetup("install", "--prefix", str(prefix)).returncode == 0
    helper = helper_of(prefix)
    os.chmod(helper, 0o770)
    done = capsetup("status", "--prefix", str(prefix))
    assert done.returncode == 1
    assert f"{helper} is group-writable (mode 0770)" in done.stdout


def test_status_flags_a_helper_in_a_user_writable_directory(
    prefix: Path, unpriv_user: priv.User
) -> None:
    assert capsetup("install", "--prefix", str(prefix)).returncode == 0
    directory = prefix / "libexec"
    os.chown(directory, unpriv_user.uid, unpriv_user.gid)
    done = capsetup("status", "--json", "--prefix", str(prefix))
    assert done.returncode == 1
    problems = json.loads(done.stdout)["problems"]
    assert f"{directory} is owned by uid {unpriv_user.uid}, not root" in problems


def test_status_flags_a_policy_the_helper_refuses(prefix: Path) -> None:
    assert capsetup("install", "--prefix", str(prefix)).returncode == 0
    policy = prefix / "libexec" / "gprocket" / "policy"
    policy.write_text("allow * bind tcp 80\nallow nobody-knows-this packet\n")
    done = capsetup("status", "--json", "--prefix", str(prefix))
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["policy"]["valid"] is False
    assert any("line 2" in problem for problem in report["problems"]), report["problems"]


def test_install_refuses_a_world_writable_parent() -> None:
    target = Path("/tmp") / f"gp-cs-{secrets.token_hex(4)}"
    done = capsetup("install", "--prefix", str(target))
    assert done.returncode == 1
    assert "/tmp is writable by others" in done.stderr
    assert "/tmp has the sticky bit" in done.stderr
    assert not target.exists()


def test_install_refuses_a_parent_owned_by_a_user(unpriv_user: priv.User) -> None:
    parent = priv.install_root() / f"cs-user-{secrets.token_hex(4)}"
    parent.mkdir(mode=0o755)
    try:
        os.chown(parent, unpriv_user.uid, unpriv_user.gid)
        done = capsetup("install", "--prefix", str(parent / "p"))
        assert done.returncode == 1
        assert f"{parent} is owned by uid {unpriv_user.uid}" in done.stderr
        assert list(parent.iterdir()) == []
    finally:
        shutil.rmtree(parent)


def _in_private_mount(fstype: str, options: str, script: str) -> subprocess.CompletedProcess[str]:
    """Run a shell script in a private mount namespace with a fresh fs at $MNT."""
    mnt = priv.install_root() / f"cs-mnt-{secrets.token_hex(4)}"
    mnt.mkdir(mode=0o755)
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t {fstype} -o {options} {fstype} "$MNT" && {script}']  # fmt: skip
    env = {"PATH": priv.SAFE_PATH, "PYTHONPATH": priv.python_path(), "MNT": str(mnt),
           "PY": priv.VENV_PYTHON}  # fmt: skip
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60,
                              check=False)  # fmt: skip
    finally:
        mnt.rmdir()


def test_install_refuses_a_nosuid_mount() -> None:
    done = _in_private_mount(
        "tmpfs", "nosuid,mode=0755",
        '"$PY" -m capsetup install --no-ping-group --prefix "$MNT/p"; echo "rc=$?"; ls -A "$MNT"',
    )  # fmt: skip
    assert "rc=1" in done.stdout, done.stdout + done.stderr
    assert "mounted nosuid" in done.stderr
    assert done.stdout.strip() == "rc=1"  # nothing was created on the mount


def test_install_refuses_a_filesystem_that_drops_capabilities() -> None:
    # ramfs keeps no extended attributes: setcap fails, so caps mode must refuse
    # and leave nothing, while setuid mode (no xattr needed) works there.
    done = _in_private_mount(
        "ramfs", "mode=0755",
        '"$PY" -m capsetup install --no-ping-group --prefix "$MNT/p"; echo "rc=$?"; ls -A "$MNT";'
        ' "$PY" -m capsetup install --no-ping-group --mode setuid --prefix "$MNT/p"; echo "rc=$?"',
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert lines[0] == "rc=1", done.stdout + done.stderr
    assert "use --mode setuid" in done.stderr
    assert lines[1].startswith("created directory"), lines  # ls printed nothing in between
    assert lines[-1] == "rc=0"


def test_usage_errors_exit_2() -> None:
    assert capsetup("install", "--mode", "bogus").returncode == 2
    assert capsetup().returncode == 2
    assert capsetup("sudoers").returncode == 2


def test_create_group_is_undone_by_remove(prefix: Path) -> None:
    group = f"gpcs{secrets.token_hex(3)}"
    missing = capsetup("install", "--group", group, "--prefix", str(prefix))
    assert missing.returncode == 1
    assert f"group {group!r} does not exist: add --create-group" in missing.stderr
    assert not prefix.exists()
    try:
        done = capsetup("install", "--group", group, "--create-group", "--prefix", str(prefix))
        assert done.returncode == 0, done.stderr
        gid = grp.getgrnam(group).gr_gid
        assert done.stdout.splitlines()[0] == f"created group {group} (gid {gid})"
        assert os.stat(helper_of(prefix)).st_gid == gid
        removed = capsetup("remove", "--prefix", str(prefix))
        assert f"removed group {group}" in removed.stdout
        with pytest.raises(KeyError):
            grp.getgrnam(group)
    finally:
        subprocess.run(["groupdel", group], capture_output=True, check=False)


def test_policy_command_checks_like_the_helper(prefix: Path) -> None:
    assert capsetup("install", "--prefix", str(prefix)).returncode == 0
    good = capsetup("policy", "--prefix", str(prefix))
    assert good.returncode == 0
    # The written default is comments, then the one rule: the checker names its line.
    policy_text = (prefix / "libexec" / "gprocket" / "policy").read_text()
    rule_line = policy_text.splitlines().index("allow * bind any 1-1023") + 1
    assert good.stdout.splitlines()[1:] == [f"  line {rule_line}: allow * bind any 1-1023"]
    policy = prefix / "libexec" / "gprocket" / "policy"
    policy.write_text("allow * bind tcp 80\nallow * tun\n")
    bad = capsetup("policy", "--prefix", str(prefix))
    assert bad.returncode == 1
    assert "line 2: want: allow SUBJECT tun PATTERN [net ADDR/LEN,...] [mtu N-M]" in bad.stdout
