"""Build glue: compile the C helper and ship it inside the package.

Everything declarative lives in pyproject.toml; this file only adds the two
build steps setuptools cannot express there: `make -C helper` and the cffi
extension modules (every gprocket/_*_build.py that defines `ffibuilder`).
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


def cffi_modules() -> list[str]:
    modules = []
    for path in sorted((HERE / "gprocket").glob("_*_build.py")):
        if "\nffibuilder = " in path.read_text():
            modules.append(f"gprocket/{path.name}:ffibuilder")
    return modules


setup(cmdclass={"build_py": BuildWithHelper}, cffi_modules=cffi_modules())
