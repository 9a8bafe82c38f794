"""Packaging tells the truth: a wheel built from this tree and installed into a fresh venv outside
the checkout still finds the agent's build context (agent/), the unit template (packaging/) and the
deployment guide (docs/deployment.md): ngb/paths.py, setup.py's build step, MANIFEST.in.

The tree is copied to a temporary folder first (the build writes build/ and *.egg-info beside its
sources), and the wheel is installed without its dependencies: this venv's site-packages is put on
the new venv's path through a .pth file (whose own .pth files, such as the editable install of this
checkout, are not processed), so the test needs the package index only for the build backend.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from ngb.sandbox.image import agent_content_hash

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "node_modules",
    "state",
    ".cache",
    "build",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    "tests",
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv outside the checkout with this tree installed as a wheel; returns its bin/ folder."""
    root = tmp_path_factory.mktemp("pkg")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=SKIP, symlinks=True)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(src)],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    shutil.rmtree(src)  # nothing may come from the sources any more
    site = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "zz_dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def run(bin_dir: Path, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "NGB_STATE_DIR": str(tmp_path / "state"),
        "LANG": "C.UTF-8",
    }
    return subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)


def test_the_installed_package_finds_the_agents_build_context(installed: Path, tmp_path: Path) -> None:
    code = (
        "import json, ngb, ngb.paths, ngb.sandbox.image as i; print(json.dumps({'package': ngb.__file__, "
        "'root': str(ngb.paths.resource_root()), 'hash': i.agent_content_hash(i.DEFAULT_AGENT_DIR)}))"
    )
    out = run(installed, tmp_path, str(installed / "python"), "-c", code)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert str(installed.parent) in found["package"]  # the wheel, not this checkout
    assert found["hash"] == agent_content_hash(REPO / "agent")
    assert Path(found["root"], "bridge", "package.json").is_file()


def test_ngb_doctor_runs_from_the_wheel_and_checks_the_image_against_agent(
    installed: Path, tmp_path: Path
) -> None:
    out = run(installed, tmp_path, str(installed / "ngb"), "doctor", "--offline", "--json")
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    image = checks["agent image"]
    assert "here to tell if it is current" not in image["detail"], image
    if image["status"] == "ok":
        assert "is current" in image["detail"]


def test_the_unit_template_and_its_docs_ship_with_the_wheel(installed: Path, tmp_path: Path) -> None:
    out = run(installed, tmp_path, str(installed / "ngb"), "service", "show", "--user")
    assert out.returncode == 0, out.stderr
    assert "ExecStart=" in out.stdout
    docs = next(line for line in out.stdout.splitlines() if line.startswith("Documentation="))
    assert Path(docs.removeprefix("Documentation=file://")).is_file(), docs
