"""A real Synapse homeserver for the Matrix tests: started once per test session (SQLite, one client
listener on a free loopback port, federation off, rate limits lifted, cheap bcrypt) from the venv
scripts/setup-synapse.sh installs (``NGB_SYNAPSE_VENV``, default ``.venv-synapse``). A missing
Synapse is a failure, not a skip: the test command installs it.

Users are registered through the admin shared-secret API (``/_synapse/admin/v1/register``, an
HMAC-SHA1 over nonce, user, password and admin flag), which answers with an access token, so a test
gets a logged-in user in one round trip. Names are unique per call (``bot3``, ``alice7``), so the
tests share one server without seeing each other's rooms.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.channel_helpers import stop_process
from tests.conftest import free_port

SYNAPSE_VERSION = "1.163.2"
ROOT = Path(__file__).resolve().parent.parent
SHARED_SECRET = "ngb-test-shared-secret"
SERVER_NAME = "localhost"
_LIMIT = {"per_second": 1000, "burst_count": 1000}


@attrs.frozen
class MatrixUser:
    user_id: str  # @name:localhost
    password: str
    access_token: str = attrs.field(repr=False)
    device_id: str


def synapse_venv() -> Path:
    return Path(os.environ.get("NGB_SYNAPSE_VENV") or ROOT / ".venv-synapse").absolute()


def homeserver_config(folder: Path, port: int) -> dict[str, object]:
    """The smallest configuration Synapse starts with here (JSON is YAML)."""
    return {
        "server_name": SERVER_NAME,
        "pid_file": str(folder / "hs.pid"),
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                       "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}],
        "database": {"name": "sqlite3", "args": {"database": str(folder / "hs.db")}},
        "log_config": str(folder / "log.yaml"),
        "media_store_path": str(folder / "media"),
        "signing_key_path": str(folder / "signing.key"),
        "registration_shared_secret": SHARED_SECRET,
        "macaroon_secret_key": "ngb-test-macaroon",
        "form_secret": "ngb-test-form",
        "report_stats": False,
        "enable_metrics": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        "enable_registration": False,
        "url_preview_enabled": False,
        "presence": {"enabled": False},
        "rc_message": _LIMIT, "rc_registration": _LIMIT,
        "rc_login": {"address": _LIMIT, "account": _LIMIT, "failed_attempts": _LIMIT},
        "rc_joins": {"local": _LIMIT, "remote": _LIMIT},
        "rc_invites": {"per_room": _LIMIT, "per_user": _LIMIT},
        "rc_admin_redaction": _LIMIT, "rc_key_requests": _LIMIT, "rc_3pid_validation": _LIMIT,
        "rc_room_creation": _LIMIT,
        "bcrypt_rounds": 4,
        # Synapse answers a /sync identical to one of the last 2 minutes from a cache: a restarted
        # daemon's first sync (no position) got the first run's old answer and replayed its history,
        # which hid a lost sync position. Off: a restart here is like one after a longer while.
        "caches": {"sync_response_cache_duration": 0},
    }


class MatrixServer:
    """A running Synapse; ``register`` makes users on it."""

    def __init__(self, folder: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.folder = folder
        self.base_url = f"http://127.0.0.1:{port}"
        self.process = process
        self._numbers = itertools.count(1)
        self.started_in = 0.0

    def _request(self, method: str, path: str, body: object = None, token: str | None = None) -> dict[str, object]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, method=method, data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.load(response))

    def register(self, name: str, *, admin: bool = False) -> MatrixUser:
        """A new user ``<name><n>`` with a password and an access token (its first device)."""
        user = f"{name}{next(self._numbers)}"
        password = secrets.token_urlsafe(12)
        nonce = str(self._request("GET", "/_synapse/admin/v1/register")["nonce"])
        mac = hmac.new(SHARED_SECRET.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), user.encode(), password.encode(),
                                 b"admin" if admin else b"notadmin"]))
        out = self._request("POST", "/_synapse/admin/v1/register", {
            "nonce": nonce, "username": user, "password": password, "admin": admin, "mac": mac.hexdigest()})
        return MatrixUser(str(out["user_id"]), password, str(out["access_token"]), str(out["device_id"]))

    def wait_ready(self, timeout: float = 60.0) -> None:
        began = time.monotonic()
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"Synapse exited ({self.process.returncode}):\n"
                            f"{(self.folder / 'stdout.log').read_text()[-3000:]}\n{self.log_tail()}", pytrace=False)
            try:
                self._request("GET", "/_matrix/client/versions")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() - began > timeout:
                    self.stop()
                    pytest.fail(f"Synapse did not answer within {timeout:.0f} s:\n{self.log_tail()}", pytrace=False)
                time.sleep(0.05)
        self.started_in = time.monotonic() - began

    def restart(self, down: float = 0.0) -> None:
        """Stop Synapse (SIGTERM), stay down ``down`` seconds, start it again on the same port and data."""
        self.stop()
        time.sleep(down)
        self.process = launch(synapse_venv() / "bin" / "python", self.folder)
        self.wait_ready()

    def log_tail(self, lines: int = 40) -> str:
        path = self.folder / "hs.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        stop_process(self.process)


def start_synapse(folder: Path, *, ready_timeout: float = 60.0) -> MatrixServer:
    """Write the configuration and signing key, start Synapse, wait until it answers."""
    python = synapse_venv() / "bin" / "python"
    stamp = synapse_venv() / f".ngb-synapse-{SYNAPSE_VERSION}"
    if not python.exists() or not stamp.exists():
        pytest.fail(f"no Synapse {SYNAPSE_VERSION} in {synapse_venv()}: run scripts/setup-synapse.sh "
                    "(scripts/test.sh does)", pytrace=False)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "media").mkdir(exist_ok=True)
    (folder / "log.yaml").write_text(json.dumps({
        "version": 1,
        "formatters": {"f": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(folder / "hs.log"), "formatter": "f"}},
        "root": {"level": "WARNING", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }))
    key = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    (folder / "signing.key").write_text(f"ed25519 a_test {key}\n")
    port = free_port()
    (folder / "hs.yaml").write_text(json.dumps(homeserver_config(folder, port)))
    server = MatrixServer(folder, port, launch(python, folder))
    server.wait_ready(ready_timeout)
    return server


def launch(python: Path, folder: Path) -> subprocess.Popen[bytes]:
    stdout = (folder / "stdout.log").open("ab")
    return subprocess.Popen([str(python), "-m", "synapse.app.homeserver", "-c", str(folder / "hs.yaml")],
                            cwd=folder, stdout=stdout, stderr=subprocess.STDOUT)


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MatrixServer]:
    """One Synapse for the whole session (about 1.5 s to start)."""
    server = start_synapse(tmp_path_factory.mktemp("synapse"))
    print(f"synapse {SYNAPSE_VERSION} ready in {server.started_in:.2f} s at {server.base_url}")
    try:
        yield server
    finally:
        server.stop()
