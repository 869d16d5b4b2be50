"""Build glue: compile the C helper and ship it inside the package.

Everything declarative lives in pyproject.toml; this file only adds the two
build steps setuptools cannot express there: `make -C helper` and the cffi
extension modules (CFFI_MODULES: each builder and its FFI, listed by hand).
"""

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
HELPER = HERE / "gprocket" / "_bin" / "gprocket-helper"


class BuildWithHelper(build_py):
    def run(self) -> None:
        subprocess.run(["make", "-C", str(HERE / "helper")], check=True)
        super().run()
        target = Path(self.build_lib) / "gprocket" / "_bin"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(HELPER, target / HELPER.name)


# Each gprocket/_*_build.py and the module it builds: _icmp_speed (multiping's
# loop), _packet_speed (ring and batch loops), _fdpass_speed (reply receive).
CFFI_MODULES = [
    "gprocket/_icmp_build.py:ffibuilder",
    "gprocket/_packet_build.py:ffibuilder",
    "gprocket/_fdpass_build.py:ffibuilder",
]


setup(cmdclass={"build_py": BuildWithHelper}, cffi_modules=CFFI_MODULES)
