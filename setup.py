"""Build step: ship agent/, bridge/ (without node_modules), packaging/ and docs/deployment.md inside
the wheel as ``ngb/_resources/`` (found at run time by ``ngb.paths.resource_root``). All metadata
lives in pyproject.toml; a checkout run in place needs no build (ngb/paths.py)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SKIP = shutil.ignore_patterns("node_modules", "__pycache__", "*.pyc", ".pytest_cache", "wheels", "*.egg-info")


class build_py_with_resources(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "ngb" / "_resources"
        shutil.rmtree(target, ignore_errors=True)
        for name in ("agent", "bridge", "packaging"):
            if (HERE / name).is_dir():
                shutil.copytree(HERE / name, target / name, ignore=SKIP)
        (target / "docs").mkdir(parents=True, exist_ok=True)
        shutil.copy2(HERE / "docs" / "deployment.md", target / "docs" / "deployment.md")


setup(cmdclass={"build_py": build_py_with_resources})
