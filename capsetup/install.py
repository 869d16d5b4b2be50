"""``capsetup install`` and ``capsetup remove``.

Install puts the packaged helper at PREFIX/libexec/gprocket/gprocket-helper,
root:GROUP 0750 with file capabilities (or setuid root), plus a default
policy, and opens ICMP echo sockets to GROUP (capsetup/pinggroup.py) unless
told not to. It compares before it writes, so a second run changes nothing,
and every change it makes is one line of its result.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import stat
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from capsetup import pinggroup
from capsetup._fs import atomic_write
from capsetup._layout import (
    DEFAULT_GROUP,
    Layout,
    Manifest,
    SetupError,
    ensure_dirs,
    packaged_helper,
    require_root,
)
from gprocket.admin.filecaps import (
    FileCaps,
    apply_file_caps,
    packaged_file_caps,
    read_file_caps,
)
from gprocket.admin.locations import mount_of, nearest_existing
from gprocket.admin.policy import DEFAULT_POLICY, load_policy

__all__ = [
    "HelperState",
    "Wanted",
    "install",
    "install_warnings",
    "place_privileged_file",
    "remove",
    "resolve_group",
]

MODES = ("caps", "setuid")


@dataclass(frozen=True)
class Wanted:
    """What the installed helper must look like."""

    content: bytes
    gid: int
    mode: int  # permission bits including S_ISUID
    caps: FileCaps | None


@dataclass(frozen=True)
class HelperState:
    """What the installed helper looks like now (None fields: no file)."""

    content: bytes | None
    uid: int | None
    gid: int | None
    mode: int | None
    caps: FileCaps | None

    @classmethod
    def read(cls, path: Path) -> HelperState:
        """Read the helper at ``path`` without following a symlink."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return cls(None, None, None, None, None)
        if not stat.S_ISREG(st.st_mode):
            raise SetupError(f"{path} exists and is not a regular file: remove it first")
        return cls(
            path.read_bytes(), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), read_file_caps(path)
        )

    def differences(self, wanted: Wanted) -> list[str]:
        """What differs from ``wanted``, in words (empty: nothing to do)."""
        if self.content is None:
            return []
        out = []
        if self.content != wanted.content:
            out.append("content differs from the packaged helper")
        if (self.uid, self.gid) != (0, wanted.gid):
            out.append(f"owner {self.uid}:{self.gid} -> 0:{wanted.gid}")
        if self.mode != wanted.mode:
            out.append(f"mode {self.mode:04o} -> {wanted.mode:04o}")
        have = self.caps.text if self.caps else "none"
        want = wanted.caps.text if wanted.caps else "none"
        same = self.caps is wanted.caps is None or (
            self.caps is not None and wanted.caps is not None and self.caps.same_set(wanted.caps)
        )
        if not same:
            out.append(f"capabilities {have} -> {want}")
        return out


def resolve_group(name: str, *, create: bool) -> tuple[int, bool]:
    """The gid of group ``name``; create it (system group) when asked.

    Returns (gid, created). Raises SetupError when it does not exist and
    ``create`` is false, or groupadd fails.
    """
    try:
        return grp.getgrnam(name).gr_gid, False
    except KeyError:
        pass
    if not create:
        raise SetupError(f"group {name!r} does not exist: add --create-group, or create it "
                         f"with `groupadd --system {name}`")  # fmt: skip
    done = subprocess.run(["groupadd", "--system", name], capture_output=True, text=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        raise SetupError(f"groupadd --system {name} failed: {done.stderr.strip()}")
    return grp.getgrnam(name).gr_gid, True


def _check_mount(directory: Path) -> None:
    mount = mount_of(nearest_existing(directory))
    if mount.nosuid:
        raise SetupError(
            f"{directory} is on {mount.mount_point} mounted nosuid ({mount.fstype}): the kernel "
            "ignores set-user-id bits and file capabilities there; choose another --prefix"
        )
    if mount.read_only:
        raise SetupError(f"{directory} is on a read-only mount ({mount.mount_point})")


def _check_source(source: Path) -> bytes:
    if not source.is_file():
        raise SetupError(f"the packaged helper {source} is missing: build it with "
                         "`make -C helper` (or reinstall gprocket)")  # fmt: skip
    done = subprocess.run([str(source), "--version"], capture_output=True, text=True,
                          check=False, env={}, timeout=10)  # fmt: skip
    if done.returncode != 0 or not done.stdout.startswith("gprocket-helper "):
        raise SetupError(f"{source} does not answer --version like a gprocket helper: "
                         f"{(done.stdout + done.stderr).strip()!r}")  # fmt: skip
    return source.read_bytes()


def place_privileged_file(path: Path, wanted: Wanted) -> None:
    """Put ``wanted`` at ``path`` atomically, capabilities verified before the rename.

    Capabilities are set and read back on the descriptor capsetup created,
    never by name. Raises SetupError when the filesystem does not keep the
    capabilities or the mode (the temporary file is then removed and
    ``path`` left untouched).
    """

    def set_caps(fd: int) -> None:
        if wanted.caps is None:
            return
        try:
            apply_file_caps(fd, wanted.caps)
            back = read_file_caps(fd)
        except OSError as err:
            raise SetupError(
                f"cannot give {path} file capabilities ({err.strerror or err}): the "
                "filesystem may not keep extended attributes; use --mode setuid"
            ) from err
        if back is None or not back.same_set(wanted.caps):
            raise SetupError(
                f"the filesystem under {path.parent} dropped the file capabilities "
                f"(read back {back.text if back else 'none'}): use --mode setuid"
            )

    def kept_mode(tmp: Path) -> None:
        got = stat.S_IMODE(os.lstat(tmp).st_mode)
        if got != wanted.mode:
            raise SetupError(f"the filesystem under {path.parent} did not keep mode "
                             f"{wanted.mode:04o} (got {got:04o})")

    atomic_write(path, wanted.content, mode=wanted.mode, gid=wanted.gid, before_close=set_caps,
                 check=kept_mode)


def install(
    prefix: str | Path | None = None,
    *,
    mode: str = "caps",
    group: str = DEFAULT_GROUP,
    create_group: bool = False,
    source: Path | None = None,
    ping_group: bool = True,
    sysctl_dir: Path = pinggroup.SYSCTL_DIR,
) -> list[str]:
    """Install the helper and default policy under ``prefix``; return what changed.

    With ``ping_group`` the group's gid is brought into
    net.ipv4.ping_group_range (never narrowing it), persisted in
    ``sysctl_dir``. An empty list means nothing had to change. Raises
    SetupError with the reason when the target is unsafe or the filesystem
    cannot hold the privilege, before anything is written.
    """
    require_root()
    if mode not in MODES:
        raise SetupError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    layout = Layout.of(prefix)
    source = source or packaged_helper()
    content = _check_source(source)
    caps = packaged_file_caps(source) if mode == "caps" else None
    manifest = Manifest.load(layout)
    if manifest.group not in (None, group) and layout.helper.exists():
        raise SetupError(f"{layout.helper} is installed for group {manifest.group!r}: "
                         "run `capsetup remove` first to change the group")  # fmt: skip
    _check_mount(layout.directory)
    if ping_group:
        pinggroup.read_range()
        if not sysctl_dir.is_dir():
            raise SetupError(f"{sysctl_dir} does not exist: cannot persist "
                             f"{pinggroup.KEY} (or pass --no-ping-group)")  # fmt: skip
    gid, created_group = resolve_group(group, create=create_group)
    changes = []
    if created_group:
        changes.append(f"created group {group} (gid {gid})")
    created = ensure_dirs(layout.directory)
    try:
        changes.extend(
            _install_files(
                layout,
                replace(manifest, created_group=manifest.created_group or created_group),
                wanted=Wanted(
                    content, gid, 0o750 | (stat.S_ISUID if mode == "setuid" else 0), caps
                ),
                mode=mode,
                group=group,
                created=created,
            )
        )
    except BaseException:
        # A refused install leaves no trace: not even the directories it made.
        for path in reversed(created):
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise
    if ping_group:
        changes.extend(_enable_ping(layout, group=group, gid=gid, sysctl_dir=sysctl_dir))
    return changes


def _enable_ping(layout: Layout, *, group: str, gid: int, sysctl_dir: Path) -> list[str]:
    manifest = Manifest.load(layout)
    before = pinggroup.PingState(manifest.ping_conf, manifest.ping_previous,
                                 manifest.ping_applied)  # fmt: skip
    after, changes = pinggroup.enable(layout, before, group=group, gid=gid,
                                      sysctl_dir=sysctl_dir)  # fmt: skip
    if after != before:
        replace(manifest, ping_conf=after.conf, ping_previous=after.previous,
                ping_applied=after.applied).save(layout)  # fmt: skip
    return changes


def _install_files(
    layout: Layout,
    manifest: Manifest,
    *,
    wanted: Wanted,
    mode: str,
    group: str,
    created: list[Path],
) -> list[str]:
    changes = [f"created directory {path} (root:root 0755)" for path in created]
    caps = wanted.caps
    state = HelperState.read(layout.helper)
    how = f"root:{group} {wanted.mode:04o}, " + (
        f"capabilities {caps.text}" if caps else "setuid root"
    )
    if state.content is None:
        place_privileged_file(layout.helper, wanted)
        changes.append(f"installed helper {layout.helper} ({how})")
    else:
        diffs = state.differences(wanted)
        if diffs:
            place_privileged_file(layout.helper, wanted)
            changes.append(f"replaced helper {layout.helper}: {'; '.join(diffs)}")
    if not os.path.lexists(layout.policy):
        atomic_write(layout.policy, DEFAULT_POLICY.encode(), mode=0o644)
        changes.append(f"wrote default policy {layout.policy} (root:root 0644)")
    new_manifest = replace(
        manifest,
        mode=mode,
        group=group,
        created_dirs=tuple(dict.fromkeys([*manifest.created_dirs, *map(str, created)])),
    )
    if new_manifest.save(layout):
        changes.append(f"recorded the install in {layout.manifest}")
    return changes


def install_warnings(prefix: str | Path | None = None) -> list[str]:
    """Problems worth printing after an install that are not install's to fix."""
    layout = Layout.of(prefix)
    loaded = load_policy(layout.policy)
    if loaded.refused:
        return [f"the helper will deny every request: policy {layout.policy}: {loaded.refused}"]
    return []


def _remove_file(path: Path, what: str, changes: list[str]) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    changes.append(f"removed {what} {path}")


def remove(prefix: str | Path | None = None, *, purge: bool = False) -> list[str]:
    """Undo ``install`` (and ``sudoers``/``python``) for ``prefix``; return what changed.

    The policy is kept when it was edited, unless ``purge``; it is then
    named in the result so nothing is left silently.
    """
    require_root()
    layout = Layout.of(prefix)
    manifest = Manifest.load(layout)
    changes: list[str] = []
    for python in manifest.pythons:
        _remove_file(Path(python), "interpreter copy", changes)
    for dropin in manifest.sudoers:
        _remove_file(Path(dropin), "sudoers drop-in", changes)
    changes.extend(pinggroup.disable(pinggroup.PingState(
        manifest.ping_conf, manifest.ping_previous, manifest.ping_applied)))  # fmt: skip
    _remove_file(layout.helper, "helper", changes)
    try:
        text = layout.policy.read_text()
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError):
        text = ""
    kept = text is not None and text != DEFAULT_POLICY and not purge
    if kept:
        changes.append(f"kept edited policy {layout.policy} (remove --purge deletes it)")
        # Keep the record of directories and group, so a later --purge can finish.
        if not manifest.empty:
            replace(manifest, mode=None, pythons=(), sudoers=(), ping_conf=None,
                    ping_previous=None, ping_applied=None).save(layout)  # fmt: skip
        return changes
    if text is not None:
        _remove_file(layout.policy, "policy", changes)
    _remove_file(layout.manifest, "install record", changes)
    for directory in sorted(manifest.created_dirs, key=len, reverse=True):
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            continue
        except OSError as err:
            if err.errno != errno.ENOTEMPTY:
                raise
            changes.append(f"kept directory {directory}: not empty")
            continue
        changes.append(f"removed directory {directory}")
    if manifest.created_group and manifest.group:
        done = subprocess.run(["groupdel", manifest.group], capture_output=True, text=True,
                              check=False)  # fmt: skip
        if done.returncode == 0:
            changes.append(f"removed group {manifest.group}")
        else:
            changes.append(f"kept group {manifest.group}: {done.stderr.strip()}")
    return changes
