"""Where an install lives, and the manifest of what capsetup created there.

The manifest lets ``remove`` undo exactly what was created (directories,
the group, sudoers drop-ins, interpreter copies) and nothing else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from capsetup._fs import atomic_write
from gprocket.admin.locations import chain_problems, nearest_existing

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_PREFIX",
    "SUDOERS_DIR",
    "Layout",
    "Manifest",
    "SetupError",
    "ensure_dirs",
    "packaged_helper",
    "require_root",
]

DEFAULT_PREFIX = Path("/usr/local")
DEFAULT_GROUP = "gprocket"
SUDOERS_DIR = Path("/etc/sudoers.d")


class SetupError(Exception):
    """capsetup refuses or fails; the message says why and what to do."""


def packaged_helper() -> Path:
    """The unprivileged helper binary shipped inside the gprocket package.

    Found without importing gprocket (which would start gevent in an installer).
    """
    spec = importlib.util.find_spec("gprocket")
    if spec is None or not spec.submodule_search_locations:
        raise SetupError("the gprocket package is not importable: install it first")
    return Path(next(iter(spec.submodule_search_locations))) / "_bin" / "gprocket-helper"


def require_root() -> None:
    """Raise SetupError unless running as root."""
    if os.geteuid() != 0:
        raise SetupError("this command changes root-owned files: run it as root")


@dataclass(frozen=True)
class Layout:
    """The paths of one install under ``prefix``."""

    prefix: Path

    @classmethod
    def of(cls, prefix: str | Path | None) -> Layout:
        """Layout for ``prefix`` (default /usr/local); raises SetupError if relative."""
        path = Path(prefix) if prefix is not None else DEFAULT_PREFIX
        if not path.is_absolute():
            raise SetupError(f"--prefix must be an absolute path, not {str(path)!r}")
        return cls(Path(os.path.normpath(path)))

    @property
    def directory(self) -> Path:
        """PREFIX/libexec/gprocket: the helper's directory."""
        return self.prefix / "libexec" / "gprocket"

    @property
    def helper(self) -> Path:
        """The installed helper."""
        return self.directory / "gprocket-helper"

    @property
    def policy(self) -> Path:
        """The policy file beside the helper (docs/POLICY.md)."""
        return self.directory / "policy"

    @property
    def manifest(self) -> Path:
        """What capsetup created for this prefix."""
        return self.directory / "capsetup.json"

    def sudoers_file(self, sudoers_dir: Path = SUDOERS_DIR) -> Path:
        """The drop-in for this prefix; one per prefix so installs never collide.

        sudo skips drop-in names containing '.' or ending in '~', so the name
        is letters, digits, '-' and '_' only.
        """
        if self.prefix == DEFAULT_PREFIX:
            return sudoers_dir / "gprocket"
        digest = hashlib.sha256(str(self.prefix).encode()).hexdigest()[:12]
        return sudoers_dir / f"gprocket-{digest}"


@dataclass(frozen=True)
class Manifest:
    """Everything capsetup created under one prefix (JSON beside the helper)."""

    mode: str | None = None
    group: str | None = None
    created_dirs: tuple[str, ...] = ()
    created_group: bool = False
    sudoers: tuple[str, ...] = ()
    pythons: tuple[str, ...] = ()
    # net.ipv4.ping_group_range (capsetup/pinggroup.py): the sysctl.d file
    # written, the range found before and the one set.
    ping_conf: str | None = None
    ping_previous: tuple[int, int] | None = None
    ping_applied: tuple[int, int] | None = None

    @classmethod
    def load(cls, layout: Layout) -> Manifest:
        """The manifest of ``layout``, empty when none exists."""
        try:
            data = json.loads(layout.manifest.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as err:
            raise SetupError(f"cannot read {layout.manifest}: {err}") from err
        return cls(
            mode=data.get("mode"),
            group=data.get("group"),
            created_dirs=tuple(data.get("created_dirs", ())),
            created_group=bool(data.get("created_group", False)),
            sudoers=tuple(data.get("sudoers", ())),
            pythons=tuple(data.get("pythons", ())),
            ping_conf=data.get("ping_conf"),
            ping_previous=_pair(data.get("ping_previous")),
            ping_applied=_pair(data.get("ping_applied")),
        )

    def to_json(self) -> str:
        """Stable JSON text (sorted keys), so an unchanged manifest is byte-equal."""
        data = dataclasses.asdict(self)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def save(self, layout: Layout) -> bool:
        """Write atomically if different; True when written."""
        text = self.to_json()
        try:
            if layout.manifest.read_text() == text:
                return False
        except FileNotFoundError:
            pass
        atomic_write(layout.manifest, text.encode(), mode=0o644)
        return True

    @property
    def empty(self) -> bool:
        """True when the manifest records nothing (nothing installed here)."""
        return self == Manifest()


def _pair(value: object) -> tuple[int, int] | None:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return value[0], value[1]
    return None


def ensure_dirs(directory: Path) -> list[Path]:
    """Create ``directory`` and missing parents as root 0755; return those created.

    Raises SetupError when an existing ancestor is unsafe (writable by
    someone other than root) or the directory cannot be created.
    """
    existing = nearest_existing(directory)
    problems = chain_problems(existing)
    if problems:
        raise SetupError(
            f"refusing to install under {directory}: "
            + "; ".join(problems)
            + " (anyone who can write there could replace the helper)"
        )
    if not existing.is_dir() or (existing != directory and existing.is_symlink()):
        raise SetupError(f"{existing} is not a directory")
    created: list[Path] = []
    missing = []
    current = directory
    while current != existing:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        os.mkdir(path, 0o755)
        os.chown(path, 0, 0)
        os.chmod(path, 0o755)  # noqa: S103 - root-owned, world-readable on purpose; not the umask's call
        created.append(path)
    return created
