"""``capsetup python --venv PATH``: a venv interpreter copy with permitted-only caps.

Instead of ``setcap cap_net_raw+ep /usr/bin/python3`` (every Python program
on the machine then runs with raw sockets in its effective set), capsetup
copies the venv's interpreter to VENV/bin/python-caps and gives the copy
the capabilities in its *permitted* set only. Nothing is effective at
start; gprocket's capabilities rung raises one around one syscall.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from capsetup._filecaps import FileCaps, cap_mask, cap_names, read_file_caps
from capsetup._fs import chain_problems, mount_of, path_problems
from capsetup._layout import Layout, Manifest, SetupError, ensure_dirs, require_root
from capsetup.install import Wanted, place_privileged_file, resolve_group

__all__ = ["ALLOWED_CAPS", "COPY_NAME", "WARNING", "install_python", "venv_warnings"]

COPY_NAME = "python-caps"
DEFAULT_CAPS = "cap_net_bind_service,cap_net_raw"
ALLOWED_CAPS = frozenset({"cap_net_bind_service", "cap_net_raw", "cap_net_admin"})

WARNING = (
    "WARNING: {path} holds {caps} in its permitted set. Every program it runs, as any\n"
    "user allowed to execute it, can raise them (gprocket does so only around one\n"
    "syscall; other code need not be so careful). Anyone who can write to this venv\n"
    "(its site-packages, its scripts) can run code with them. Nothing is effective at\n"
    "start (+p, never +e). Use it only for a venv that only trusted users can write."
)


def install_python(
    venv: str | Path,
    *,
    prefix: str | Path | None = None,
    caps: str = DEFAULT_CAPS,
    group: str | None = None,
) -> tuple[Path, list[str]]:
    """Copy ``venv``'s interpreter to VENV/bin/python-caps with ``caps``+p.

    Returns (copy path, what changed). Raises SetupError for a path that is
    not a venv, a capability outside ALLOWED_CAPS, or a nosuid mount.
    """
    require_root()
    venv_path = Path(venv)
    if not venv_path.is_absolute():
        raise SetupError(f"--venv must be an absolute path, not {str(venv)!r}")
    if not (venv_path / "pyvenv.cfg").is_file():
        raise SetupError(f"{venv_path} is not a virtual environment (no pyvenv.cfg)")
    interpreter = venv_path / "bin" / "python"
    real = Path(os.path.realpath(interpreter))
    if not real.is_file():
        raise SetupError(f"{interpreter} does not lead to an interpreter")
    try:
        mask = cap_mask(caps)
    except ValueError as err:
        raise SetupError(f"--caps: {err}") from err
    extra = set(cap_names(mask)) - ALLOWED_CAPS
    if extra or not mask:
        raise SetupError(f"--caps: only {', '.join(sorted(ALLOWED_CAPS))} may be given, "
                         f"not {', '.join(sorted(extra)) or 'nothing'}")  # fmt: skip
    copy = venv_path / "bin" / COPY_NAME
    if mount_of(copy.parent).nosuid:
        raise SetupError(f"{copy.parent} is on a nosuid mount: file capabilities are ignored there")
    gid = resolve_group(group, create=False)[0] if group else 0
    wanted_caps = FileCaps(permitted=mask)
    wanted = Wanted(real.read_bytes(), gid, 0o750 if group else 0o755, wanted_caps)
    changes: list[str] = []
    current = read_file_caps(copy) if copy.is_file() else None
    same = (
        copy.is_file()
        and not copy.is_symlink()
        and current is not None
        and current.same_set(wanted_caps)
        and copy.read_bytes() == wanted.content
        and (copy.stat().st_uid, copy.stat().st_gid, copy.stat().st_mode & 0o7777)
        == (0, gid, wanted.mode)
    )
    if not same:
        if copy.is_symlink():
            copy.unlink()
        place_privileged_file(copy, wanted)
        changes.append(f"copied {real} to {copy} with {wanted_caps.text} "
                       f"(root:{group or 'root'} {wanted.mode:04o})")  # fmt: skip
    layout = Layout.of(prefix)
    manifest = Manifest.load(layout)
    if str(copy) not in manifest.pythons:
        created = ensure_dirs(layout.directory)
        manifest = replace(
            manifest,
            pythons=(*manifest.pythons, str(copy)),
            created_dirs=(*manifest.created_dirs, *map(str, created)),
        )
        manifest.save(layout)
        changes.extend(f"created directory {path} (root:root 0755)" for path in created)
    return copy, changes


def venv_warnings(venv: str | Path) -> list[str]:
    """Who besides root could put code into the venv the copy runs."""
    path = Path(venv)
    problems: list[str] = []
    for part in (path, path / "bin", *sorted((path / "lib").glob("python3*/site-packages"))):
        if part.exists():
            problems.extend(p for p in path_problems(part) if p not in problems)
    parents = chain_problems(path.parent) if path.parent.exists() else []
    return problems + parents
