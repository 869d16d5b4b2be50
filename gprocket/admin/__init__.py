"""What judges an install, shared by ``gprocket doctor`` and the capsetup installer.

``policy`` (the helper's policy format: parse, load as the helper would,
evaluate), ``filecaps`` (the security.capability xattr and setcap's text),
``locations`` (where a privileged file may live; mounts) and ``doctor``
(which rung would serve each kind of request, and why not the others).
capsetup imports these; nothing here imports capsetup. Each is imported on
first use: ``gprocket.admin.policy``.
"""

import importlib
from types import ModuleType

_SUBMODULES = frozenset({"doctor", "filecaps", "locations", "policy"})

__all__ = ["doctor", "filecaps", "locations", "policy"]


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
