"""The wheel's build step (pyproject.toml: [tool.setuptools.cmdclass]): the top-level conf/ and
experiments/ (the one copy anyone edits) are copied into the wheel as harness/conf/ and
harness/experiments/, where `harness.config` looks first. Used by setuptools only.
"""
from __future__ import annotations

from pathlib import Path

from setuptools.command.build_py import build_py

SHIPPED = ("conf", "experiments")  # top-level folders -> harness/<folder>/ in the wheel
ROOT = Path(__file__).resolve().parent.parent


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads them from the checkout (harness.config)
            return
        for folder in SHIPPED:
            for source in sorted((ROOT / folder).rglob("*.yaml")):
                target = Path(self.build_lib) / "harness" / folder / source.relative_to(ROOT / folder)
                self.mkpath(str(target.parent))
                self.copy_file(str(source), str(target))
