"""gprocket's cffi modules rebuilt by clang under ASan/UBSan, in a copy of the package.

A test copies the installed package, replaces one compiled module with a
sanitized build of the same C (the builder's own cdef and source, its
-std=c11 -Wall -Wextra -Werror), and runs a child interpreter on the copy
with the sanitizer runtime preloaded: any report aborts the child.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path
from types import ModuleType

import gprocket
from support.privileged import SAFE_PATH

__all__ = ["SANITIZE", "build_sanitized", "sanitized_env"]

SANITIZE = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all", "-shared-libsan"]


def build_sanitized(builder: ModuleType, into: Path) -> Path:
    """The package copied to ``into``/gprocket with ``builder``'s module sanitized; its path.

    ``builder`` is a cffi builder module (``make_builder``, ``CFLAGS``,
    ``HERE``); the module's dotted name is the one it builds, so the copy
    follows the package's layout wherever the builder sits.
    """
    ffi = builder.make_builder()
    dotted: str = ffi._assigned_source[0]  # cffi keeps set_source's arguments
    parts = dotted.split(".")
    installed = Path(gprocket.__file__).resolve().parent
    shutil.copytree(installed, into / "gprocket",
                    ignore=shutil.ignore_patterns(f"{parts[-1]}.*.so", "__pycache__"))
    wrapper = into / f"{parts[-1]}.c"
    ffi.emit_c_code(str(wrapper))
    target = into.joinpath(*parts[:-1], f"{parts[-1]}{sysconfig.get_config_var('EXT_SUFFIX')}")
    proc = subprocess.run(
        ["clang", "-shared", "-fPIC", *(f for f in builder.CFLAGS if not f.startswith("-O")),
         *SANITIZE, f"-I{sysconfig.get_path('include')}", f"-I{builder.HERE}",
         str(wrapper), "-o", str(target)],
        capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def sanitized_env(pythonpath: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A child's environment: the copy first on its path, clang's ASan runtime preloaded."""
    runtime = subprocess.run(["clang", "-print-file-name=libclang_rt.asan-x86_64.so"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert os.path.isfile(runtime), runtime
    return {
        "PATH": SAFE_PATH, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": pythonpath,
        # The interpreter is not instrumented: the runtime comes first, and
        # Python's own allocator steps aside so ASan sees every block.
        "LD_PRELOAD": runtime, "PYTHONMALLOC": "malloc",
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        **(extra or {}),
    }
