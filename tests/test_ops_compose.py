"""docker-compose.yml is valid (`docker compose config`, or Debian's docker-compose v1) and says
what docs/deployment.md promises: the host's Docker socket, the state folder at the same path,
a health check on /healthz."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    v1 = shutil.which("docker-compose")
    return [v1] if v1 else None


def rendered(tmp_path: Path, state: str) -> dict:
    cmd = compose_command()
    if cmd is None:
        pytest.fail("no docker compose plugin and no docker-compose (Debian package docker-compose)")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / "Dockerfile.daemon", tmp_path / "Dockerfile.daemon")
    (tmp_path / "ngb.env").write_text("NGB_WEB_PORT=8640\n")
    (tmp_path / "ngb.env").chmod(0o600)
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "NGB_STATE_DIR": state}
    r = subprocess.run([*cmd, "config"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return yaml_to_data(r.stdout)


def yaml_to_data(text: str) -> dict:
    """Parse the YAML that `config` prints: PyYAML in this venv, else the system Python's (the
    Debian docker-compose package depends on python3-yaml)."""
    try:
        import yaml
    except ImportError:
        system = shutil.which("python3", path="/usr/bin:/bin")
        if system is None:
            pytest.fail("no YAML parser")
        r = subprocess.run(
            [system, "-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
            input=text, capture_output=True, text=True, timeout=30,
        )
        if r.returncode != 0:
            pytest.fail(f"no YAML parser: {r.stderr.strip()[-200:]}")
        return json.loads(r.stdout)
    return yaml.safe_load(text)


def test_compose_file_is_valid_and_complete(tmp_path: Path) -> None:
    state = "/srv/ngb-state"
    data = rendered(tmp_path, state)
    ngb = data["services"]["ngb"]
    volumes = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in ngb["volumes"]]
    assert any(v.startswith("/var/run/docker.sock:/var/run/docker.sock") for v in volumes), volumes
    assert any(v.startswith(f"{state}:{state}") for v in volumes), volumes  # same path inside
    assert ngb["environment"]["NGB_STATE_DIR"] == state
    health = ngb["healthcheck"]["test"]
    assert "/healthz" in json.dumps(health)
    assert ngb["restart"] == "unless-stopped" and ngb["init"] is True
    assert ngb["depends_on"]["agent-image"]["condition"] == "service_completed_successfully"
    assert data["services"]["agent-image"]["command"] == ["image", "build"]
    assert ngb["command"] == ["run", "--no-build"]


def test_dockerfile_daemon_copies_what_the_daemon_needs() -> None:
    text = (ROOT / "Dockerfile.daemon").read_text()
    for needed in ("COPY ngb ./ngb", "COPY agent ./agent", "requirements.lock", 'ENTRYPOINT ["/opt/venv/bin/python", "-m", "ngb"]'):
        assert needed in text
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "ngb.env" in ignore and ".venv" in ignore and "state" in ignore  # no secrets or state in the image
