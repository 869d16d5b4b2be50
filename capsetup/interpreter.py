"""``capsetup python --venv PATH``: a venv interpreter copy with permitted-only caps.

Instead of ``setcap cap_net_raw+ep /usr/bin/python3`` (every Python program
on the machine then runs with raw sockets in its effective set), capsetup
copies the venv's interpreter to VENV/bin/python-caps and gives the copy
the capabilities in its *permitted* set only. Nothing is effective at
start; gprocket's capabilities rung raises one around one syscall.

capsetup refuses (writing nothing) unless VENV/bin/python really is the
venv's Python (a link into, or a copy of, the interpreter in its
pyvenv.cfg ``home``) and nobody but root can change that interpreter, the
venv or any directory above them; the copy is root:GROUP 0750 (GROUP
gprocket unless --group says otherwise), so only the group can run it.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from capsetup._layout import (
    DEFAULT_GROUP,
    Layout,
    Manifest,
    SetupError,
    ensure_dirs,
    require_root,
)
from capsetup.install import Wanted, place_privileged_file, resolve_group
from gprocket.admin.filecaps import FileCaps, cap_mask, cap_names, read_file_caps
from gprocket.admin.locations import chain_problems, mount_of, path_problems

__all__ = ["ALLOWED_CAPS", "COPY_NAME", "WARNING", "install_python", "venv_problems"]

COPY_NAME = "python-caps"
DEFAULT_CAPS = "cap_net_bind_service,cap_net_raw"
ALLOWED_CAPS = frozenset({"cap_net_bind_service", "cap_net_raw", "cap_net_admin"})

WARNING = (
    "WARNING: {path} holds {caps} in its permitted set. Every program it runs, as any\n"
    "user allowed to execute it, can raise them (gprocket does so only around one\n"
    "syscall; other code need not be so careful). Anyone who can write to this venv\n"
    "(its site-packages, its scripts) can run code with them: capsetup checked that\n"
    "only root can today; keep it so. Nothing is effective at start (+p, never +e)."
)


def _config(venv: Path) -> dict[str, str]:
    values = {}
    for line in (venv / "pyvenv.cfg").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _real_interpreter(venv: Path) -> Path:
    """The file VENV/bin/python really runs, if it is the venv's Python; else SetupError.

    A venv's bin/python resolves to the Python named by its pyvenv.cfg
    (``executable``, or python/python3/pythonX.Y in ``home``), or is a copy
    byte-equal to it in the venv's own bin/.
    """
    interpreter = venv / "bin" / "python"
    real = Path(os.path.realpath(interpreter))
    if not real.is_file():
        raise SetupError(f"{interpreter} does not lead to an interpreter")
    config = _config(venv)
    home = config.get("home")
    if not home or not os.path.isabs(home):
        raise SetupError(f"{venv / 'pyvenv.cfg'} names no absolute home: not a venv capsetup "
                         "can vouch for")  # fmt: skip
    names = {"python", "python3"}
    version = config.get("version") or config.get("version_info") or ""
    if version.count(".") >= 1:
        names.add("python" + ".".join(version.split(".")[:2]))
    candidates = {Path(os.path.realpath(Path(home) / name)) for name in names}
    if config.get("executable"):
        candidates.add(Path(os.path.realpath(config["executable"])))
    candidates = {candidate for candidate in candidates if candidate.is_file()}
    if real in candidates:
        return real
    if real.parent == Path(os.path.realpath(venv / "bin")):
        # A venv made with --copies: its own file, byte-equal to the home's Python.
        content = real.read_bytes()
        if any(candidate.read_bytes() == content for candidate in candidates):
            return real
    raise SetupError(f"{interpreter} resolves to {real}, which is not the Python in the "
                     f"venv's home {home}: refusing to give it capabilities")  # fmt: skip


def venv_problems(venv: Path, real: Path | None) -> list[str]:
    """Why someone other than root could change what the copy would run.

    The real interpreter and every directory above it, the venv, its bin/,
    pyvenv.cfg and site-packages and every directory above the venv: each
    root-owned, not group/other-writable (no sticky shared directory).
    """
    problems: list[str] = []

    def add(found: list[str]) -> None:
        problems.extend(p for p in found if p not in problems)

    if real is not None:
        add(chain_problems(real))
    add(chain_problems(venv / "bin"))
    add(path_problems(venv / "pyvenv.cfg"))
    for site in sorted((venv / "lib").glob("python3*/site-packages")):
        add(path_problems(site.parent))
        add(path_problems(site))
    return problems


def _refuse(problems: list[str]) -> None:
    if problems:
        raise SetupError("refusing to give capabilities to this venv's Python: "
                         + "; ".join(problems)
                         + " (that user could run any code with them)")  # fmt: skip


def install_python(
    venv: str | Path,
    *,
    prefix: str | Path | None = None,
    caps: str = DEFAULT_CAPS,
    group: str = DEFAULT_GROUP,
) -> tuple[Path, list[str]]:
    """Copy ``venv``'s interpreter to VENV/bin/python-caps with ``caps``+p, root:GROUP 0750.

    Returns (copy path, what changed). Raises SetupError, writing nothing,
    for a path that is not a venv, an interpreter that is not the venv's
    Python, anything above it or in the venv that a user other than root
    could change (``venv_problems``), a capability outside ALLOWED_CAPS, an
    unknown group or a nosuid mount.
    """
    require_root()
    venv_path = Path(venv)
    if not venv_path.is_absolute():
        raise SetupError(f"--venv must be an absolute path, not {str(venv)!r}")
    if not (venv_path / "pyvenv.cfg").is_file():
        raise SetupError(f"{venv_path} is not a virtual environment (no pyvenv.cfg)")
    # Who can change the venv first: the attack's venv fails here whatever its python is.
    _refuse(venv_problems(venv_path, None))
    real = _real_interpreter(venv_path)
    _refuse(venv_problems(venv_path, real))
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
    gid = resolve_group(group, create=False)[0]
    wanted_caps = FileCaps(permitted=mask)
    wanted = Wanted(real.read_bytes(), gid, 0o750, wanted_caps)
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
                       f"(root:{group} {wanted.mode:04o})")  # fmt: skip
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
