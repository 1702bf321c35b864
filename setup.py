"""Ships the repo-root templates/ and static/ inside the package on non-editable installs, and
builds the one C extension."""

import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class BuildPyWithAssets(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the checkout
        root = Path(__file__).parent
        for name in ("templates", "static"):
            src = root / name
            if src.is_dir():
                shutil.copytree(src, Path(self.build_lib) / "handraise" / "_data" / name,
                                dirs_exist_ok=True)


# The media streams' WebSocket reader (handraise/phone/fastmedia.py says why it is in C).
WSREAD = Extension("handraise.phone._wsread", ["handraise/phone/_wsread.c"],
                   extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"])

setup(cmdclass={"build_py": BuildPyWithAssets}, ext_modules=[WSREAD])
