"""Build hook: the top-level templates/, static/ and lessons/ go into the wheel as app/templates,
app/static and app/lessons (found there by app.resources), so an installed package needs no source tree."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BESIDE_THE_PACKAGE = ("templates", "static", "lessons")


class BuildWithResources(build_py):
    def run(self) -> None:
        super().run()
        for name in BESIDE_THE_PACKAGE:
            shutil.copytree(name, Path(self.build_lib) / "app" / name, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithResources})
