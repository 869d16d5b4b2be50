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


# Each builder and the module it builds beside it: icmp/_speed (multiping's
# loop), packet/_speed (ring and batch loops), _channel/_fdpass_speed (reply
# receive and descriptor check).
CFFI_MODULES = [
    "gprocket/icmp/_build.py:ffibuilder",
    "gprocket/packet/_build.py:ffibuilder",
    "gprocket/_channel/fdpass_build.py:ffibuilder",
]


setup(cmdclass={"build_py": BuildWithHelper}, cffi_modules=CFFI_MODULES)
