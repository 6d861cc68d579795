"""The wheel's build step (pyproject.toml: [tool.setuptools.cmdclass]): conf/ and experiments/ ship
inside the package.

The repository keeps both folders at its top level, the one copy anyone edits. Building copies them
to `harness/conf/` and `harness/experiments/` in the wheel, where `harness.config` looks first, so a
plain `pip install` of the wheel runs `harness` anywhere. Used by setuptools only, never at run time.
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
