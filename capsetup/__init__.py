"""capsetup: install gprocket's helper, policy, sudoers rule and units safely.

Run it as ``capsetup COMMAND`` (or ``python -m capsetup``); ``main`` is the
entry point. Every command takes ``--prefix`` so several installs (and the
tests' temporary ones) can coexist.
"""

from __future__ import annotations

from capsetup._layout import Layout, SetupError

__all__ = ["Layout", "SetupError"]
